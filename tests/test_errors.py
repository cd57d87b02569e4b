"""Each error of `dfc check` is produced, with its place, by a small bad spec (issue: item 6)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from typer.testing import CliRunner

from dfc.cli import app
from dfc.compiler import compile_spec
from dfc.errors import ConfigError, DfcError, IllPosedError, SpecCycleError, SpecNameError, SpecSyntaxError
from dfc.spec import load_spec

GOOD = """\
spec good "a well-posed VE-type spec"
  param s = 2
  sigma(t) = s*(1 - t) + 0.1
  u(t) = 1
  f(x, t) = 0
  lambda2(t) = -d/dt(sigma(t)^2)
  g2(t) = 2*lambda2(t)
  beta(t) = g2(t)/2
end
"""


def write(tmp_path, text, name="bad.dfs"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(path, sets=None, run=None) -> DfcError:
    with pytest.raises(DfcError) as info:
        compile_spec(load_spec(path), sets, run)
    return info.value


def replace_line(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


def test_good_spec_compiles(tmp_path):
    spec = compile_spec(load_spec(write(tmp_path, GOOD)))
    assert spec.at("sigma", 0.0) == pytest.approx(2.1)
    # lambda2 = -d/dt (s(1-t)+0.1)^2 = 2 s (s(1-t)+0.1)
    assert spec.at("lambda2", 0.5) == pytest.approx(2 * 2 * 1.1)


@pytest.mark.parametrize(
    "old,new,kind,line,col,words",
    [
        ("u(t) = 1", "u(t) = 1 +* 2", SpecSyntaxError, 4, 13, "syntax error: unexpected '*'"),
        ("u(t) = 1", "u(t) = 1 + unknown_thing", SpecNameError, 4, 14, "unknown name 'unknown_thing'"),
        ("u(t) = 1", "u(t) = erf(t) + 1", SpecNameError, 4, 10, "unknown function 'erf'"),
        ("u(t) = 1", "u(t) = exp(t, 2)", SpecNameError, 4, 10, "exp takes 1 argument, got 2"),
        ("u(t) = 1", "u(t) = clamp(t, 1)", SpecNameError, 4, 10, "clamp takes 3 arguments, got 2"),
        ("u(t) = 1", "u(t) = 1\n  a(t) = b(t)\n  b(t) = a(t) + 1", SpecCycleError, 6, 10, "refer to themselves"),
        ("g2(t) = 2*lambda2(t)", "g2(t) = 0.5*lambda2(t)", IllPosedError, 7, 3, "g² − λ² is negative at t = 0"),
        ("beta(t) = g2(t)/2", "beta(t) = g2(t)/2 - 10*t", IllPosedError, 8, 3, "beta must be >= 0"),
        ("u(t) = 1", "u(t) = 1 - 2*t", IllPosedError, 4, 3, "u(t) must be > 0"),
        ("sigma(t) = s*(1 - t) + 0.1", "sigma(t) = s*(0.5 - t)", IllPosedError, 3, 3, "sigma(t) must be >= 0"),
        ("f(x, t) = 0", "f(x, t) = x/(t - 0.5)", IllPosedError, 5, 3, "f is not finite at t = 0.5"),
        ("u(t) = 1", "u(t) = 1\n  u(t) = 2", SpecNameError, 5, 3, "defined twice"),
        ("g2(t) = 2*lambda2(t)", "g2(t) = 2*lambda2(t)\n  g(t) = 1", SpecNameError, 8, 3, "either g or g2"),
        ("f(x, t) = 0", "f(x, t) = D(x, t)", SpecNameError, 5, 3, "only beta may depend on the discriminator"),
        ("u(t) = 1", "u(t) = x", SpecNameError, 4, 10, "'x' is not an argument of u"),
    ],
)
def test_error_has_place(tmp_path, old, new, kind, line, col, words):
    path = write(tmp_path, replace_line(old, new))
    err = error_of(path)
    assert isinstance(err, kind), err.render()
    assert words in err.message, err.render()
    assert err.span is not None and (err.span.line, err.span.column) == (line, col), err.render()
    rendered = err.render()
    assert rendered.startswith(f"error: {path}:{line}:{col}: ")
    assert "^" in rendered  # the caret under the place


@pytest.mark.parametrize("body,line,col,words,hint", [
    ("  parm kappa = 0.5\nend\n", 2, 3, "unexpected 'kappa' after 'parm'", "Did you mean 'param'?"),
    ("  rum steps = 8\nend\n", 2, 3, "unexpected 'steps' after 'rum'", "Did you mean 'run'?"),
    ("  prio normal(scale = 2)\nend\n", 2, 3, "after 'prio'", "Did you mean 'prior'?"),
    ("  foo bar\nend\n", 2, 7, "unexpected 'bar'", "Expected one of: '=', '('"),  # nothing close: as before
    ("  param kappa = 0.5\n", 2, 20, "the text ends too early", "'end'"),  # no `end`: at the end of the text
    ("  param kappa = 0.5\n  edn\n", 3, 3, "the text ends too early after 'edn'", "Did you mean 'end'?"),
    ("  param kappa =\n  t_end = 1\nend\n", 3, 9, "unexpected '='", "Expected one of"),  # t_end is no typo
])
def test_a_misspelt_keyword_or_a_missing_end_is_named(tmp_path, body, line, col, words, hint):
    path = tmp_path / "t.dfs"
    path.write_text('spec t extends ve_sde "typo"\n' + body)
    err = error_of(path)
    assert isinstance(err, SpecSyntaxError) and words in err.message and hint in err.hint, err.render()
    assert (err.span.line, err.span.column) == (line, col), err.render()


@pytest.mark.parametrize("u", ["1 - t/2 - 0.6*t^2", "1 - t"])
def test_a_zero_of_u_is_named_at_u_not_at_a_term_that_divides_by_it(tmp_path, u):
    """ve_sde's g2 = (1 + eta) r, r = -(dσ²/dt)/u²: a child whose u reaches 0 gets the error at its own u
    line, not a pole of the inherited g2 in the preset's file."""
    path = tmp_path / "c7.dfs"
    path.write_text(f'spec c7 extends ve_sde "u reaches 0"\n  u(t) = {u}\nend\n')
    err = error_of(path)
    assert isinstance(err, IllPosedError) and "u(t) must be > 0" in err.message, err.render()
    assert err.span.file == str(path) and err.span.line == 2


def test_ill_posed_names_the_time(tmp_path):
    # g2 < lambda2 only for t > 0.5: the error names that t
    path = write(tmp_path, replace_line("g2(t) = 2*lambda2(t)", "g2(t) = lambda2(t)*(1.5 - t)"))
    err = error_of(path)
    assert isinstance(err, IllPosedError)
    t = float(err.message.split("negative at t = ")[1].split(" ")[0])
    assert t == pytest.approx(0.5, abs=1e-3)


def test_cyclic_extends(tmp_path):
    write(tmp_path, GOOD.replace('spec good "', 'spec a extends b "'), "a.dfs")
    write(tmp_path, GOOD.replace('spec good "', 'spec b extends a "'), "b.dfs")
    with pytest.raises(SpecCycleError) as info:
        load_spec(tmp_path / "a.dfs")
    assert "cycle" in info.value.message and info.value.span.line == 1


def test_unknown_parent(tmp_path):
    p = write(tmp_path, GOOD.replace('spec good "', 'spec a extends nothing_like_this "'))
    with pytest.raises(SpecNameError) as info:
        load_spec(p)
    assert info.value.span.line == 1 and info.value.span.column == 16


@pytest.mark.parametrize("sets,words", [
    ({"nope": "1"}, "has no param 'nope'"),
    ({"s": "1 +"}, "is not a number"),
    ({"s": "zz"}, "is not a number"),
])
def test_bad_set(tmp_path, sets, words):
    err = error_of(write(tmp_path, GOOD), sets)
    assert isinstance(err, ConfigError) and words in err.message


def test_set_changes_value_and_can_make_ill_posed(tmp_path):
    p = write(tmp_path, GOOD)
    assert compile_spec(load_spec(p), {"s": "3"}).at("sigma", 0.0) == pytest.approx(3.1)
    err = error_of(p, {"s": "-1"})  # sigma(0) = -0.9 < 0
    assert isinstance(err, IllPosedError) and "sigma" in err.message


@pytest.mark.parametrize("run,words", [
    ({"steps": "0"}, "`steps` must be >= 1"),
    ({"solver": "rk45"}, "`solver` must be one of"),
    ({"grid": "karras(r = 2)"}, "karras(...) takes rho"),
    ({"fields": "exact + magic"}, "`fields` must be one of"),
    ({"time": "[1, 0]"}, "t0 < t1"),
    ({"device": "cuda:7"}, "not available"),
    ({"fields": "exact + kde(h = -1)"}, "kde option `h` must be > 0, got -1"),
    ({"fields": "exact + kde(m = 1)"}, "kde option `m` must be >= 2, got 1"),
    ({"fields": "exact + kde(cfl = -0.5)"}, "kde option `cfl` must be >= 0, got -0.5"),
    ({"fields": "exact + kde(h = 0)"}, "kde option `h` must be > 0"),
])
def test_bad_run_options(tmp_path, run, words):
    err = error_of(write(tmp_path, GOOD), None, run)
    assert isinstance(err, ConfigError) and words in err.message, err.render()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is a device here")
def test_cuda_without_a_gpu_says_why_in_one_line(tmp_path):
    """torch's own message on a CPU-only build is paragraphs of linker advice; dfc says why in a few words."""
    why = "this torch has no CUDA, or the machine no GPU" if torch.version.cuda is None else "no GPU found"
    err = error_of(write(tmp_path, GOOD), None, {"device": "cuda"})
    assert isinstance(err, ConfigError) and f"device 'cuda' is not available here to hold samples ({why})." in err.message


def test_cli_error_is_one_paragraph_exit_2(tmp_path):
    path = write(tmp_path, replace_line("u(t) = 1", "u(t) = 1 +* 2"))
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"{path}:4:13" in result.output
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, GOOD, "g.dfs")), "--set", "s=oops",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output and "--set s=oops" in result.output
    assert not (tmp_path / "o").exists()  # nothing written before the error


def test_ill_posed_child_is_reported_at_its_own_line(tmp_path):
    """A child that sets lambda2 above the parent's g2 is reported at the child's lambda2 line, and the
    message names the inherited g2 it conflicts with."""
    child = tmp_path / "child.dfs"
    child.write_text('spec child extends ve_sde "too much lambda2"\n  lambda2(t) = 3*r(t)\nend\n')
    with pytest.raises(IllPosedError) as info:
        compile_spec(load_spec(child))
    err = info.value
    assert err.span.file == str(child) and err.span.line == 2
    assert "inherited g2" in err.message and "ve_sde.dfs" in err.message


def _chain(links: int) -> str:
    """Definitions a_k = a_(k-1)^2 + a_(k-1), each calling the one before three times: 3^k copies once
    written out (dfc.spec.MAX_EXPANDED)."""
    chain = "\n".join(f"  a{i}(t) = a{i - 1}(t) * a{i - 1}(t) + a{i - 1}(t)" for i in range(1, links))
    return replace_line("beta(t) = g2(t)/2",
                        f"a0(t) = sigma(t) + t\n{chain}\n  beta(t) = g2(t)/2 + a{links - 1}(t)/1000")


def test_definitions_that_multiply_when_written_out_are_refused_at_the_first_too_large_one(tmp_path):
    """Inlining 40 links would never finish; the error names the first link beyond the limit, at once."""
    import time

    from dfc.errors import LimitError
    from dfc.spec import MAX_EXPANDED

    text = _chain(40)
    start = time.perf_counter()
    err = error_of(write(tmp_path, text))
    assert time.perf_counter() - start < 5
    assert isinstance(err, LimitError) and f"{MAX_EXPANDED:,}" in err.message
    line = textwrap.dedent(text).splitlines()[err.span.line - 1].strip()
    assert line.startswith("a6(t) =") and err.message.startswith("a6 grows")  # a5 is within the limit:
    assert compile_spec(load_spec(write(tmp_path, _chain(6), "ok.dfs"))).at("beta", 0.5) > 0


@pytest.mark.parametrize("expr", ["sqrt(2)^(2^2000)", "exp(1)^(10^400)", "2^(sqrt(2)^(2^200))", "pi^(9^9^9)"])
def test_powers_of_constants_that_are_not_numbers_are_valued_not_expanded(tmp_path, expr):
    """sqrt(2)^(2^2000) written out exactly is 2^(2^1999): sympy would compute it for ever. A constant that
    is not a plain number (a root, pi, e) raised to a large exponent is valued numerically and refused."""
    import time

    start = time.perf_counter()
    err = error_of(write(tmp_path, replace_line("u(t) = 1", f"u(t) = 1 + 0*t*({expr})")))
    assert time.perf_counter() - start < 5
    assert "beyond float64's range" in err.message and err.span.line == 4


def test_small_powers_of_such_constants_stay_exact(tmp_path):
    spec = compile_spec(load_spec(write(tmp_path, replace_line("u(t) = 1", "u(t) = sqrt(2)^2 + pi^(1/2) - t"))))
    assert spec.at("u", 0.0) == pytest.approx(2 + 3.141592653589793 ** 0.5, rel=1e-14)
