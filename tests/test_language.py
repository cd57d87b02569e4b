"""The spec language: meaning of expressions, extends, params, YAML twin, fmt, fuzzing."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfc.compiler import compile_spec
from dfc.errors import DfcError
from dfc.format import to_dfs, to_yaml
from dfc.spec import load_spec, preset_dir
from dfc.symbolic import T, X
from dfc.syntax import parse_dfs, parse_expr, read_spec_file

BASE = """\
spec base "every construct of the language"
  param a = 2
  param b = a^2          # params may use params
  k = 3                  # a local constant
  h(s) = s^2 + k         # a local function, called with any argument
  sigma(t) = a*(1.5 - t)
  u(t) = 1 + t/10
  f(x, t) = -x*t + sin(x)
  lambda2(t) = -d/dt(sigma(t)^2)/u(t)^2
  g(t) = sqrt(lambda2(t) + h(t))
  beta(t) = g2(t)/2 + sigmoid(t)*D(x, t)
  prior normal(mean = 1, scale = sqrt(b))
  run target = grid25, fields = exact + kde(h = 0.2), solver = heun, steps = 7,
      grid = karras(rho = 3), clock = sigma, time = [0, 1], samples = 100, seed = 3, denoise = true
end
"""


def test_expression_meaning(tmp_path):
    p = tmp_path / "base.dfs"
    p.write_text(BASE)
    spec = compile_spec(load_spec(p))
    e = spec.exprs
    t = 0.3
    sigma = 2 * (1.5 - t)
    u = 1 + t / 10
    lam2 = 2 * 2 * sigma / u**2  # -d/dt sigma^2 = -2 sigma sigma', sigma' = -2
    assert spec.at("sigma", t) == pytest.approx(sigma)
    assert spec.at("lambda2", t) == pytest.approx(lam2)
    assert spec.at("g2", t) == pytest.approx(lam2 + t**2 + 3)  # g given, g2 = g^2
    assert float(spec.fn["beta"](t, 0.25)) == pytest.approx((lam2 + t**2 + 3) / 2 + 0.25 / (1 + math.exp(-t)))
    assert float(spec.fn["f"](0.7, t)) == pytest.approx(-0.7 * t + math.sin(0.7))
    assert e["w_score"] == e["g2"] / 2
    prior = dict(spec.ir.prior.kwargs)
    assert float(prior["scale"].xreplace(spec.params)) == pytest.approx(2.0)
    cfg = spec.run
    assert (cfg.target, cfg.estimator, dict(cfg.estimator_options), cfg.solver, cfg.steps, cfg.grid, cfg.rho,
            cfg.clock, cfg.samples, cfg.seed, cfg.denoise) == \
        ("grid25", "kde", {"h": 0.2}, "heun", 7, "karras", 3.0, "sigma", 100, 3, True)


def test_precedence_and_unary_minus():
    def value(text):
        from dfc.spec import _Builder

        body, _ = parse_expr(text)
        return float(_Builder({}, {}).expr(body, {"t": T}, "test").xreplace({T: 2}))

    assert value("-t^2") == -4          # ^ binds tighter than unary minus
    assert value("2^3^2") == 512        # right associative
    assert value("2^-1") == 0.5
    assert value("-(t)^2 + 10/5*2") == 0
    assert value("min(t, 1, 3) + max(t, 5) + clamp(t, 0, 1.5) + abs(-t)") == 1 + 5 + 1.5 + 2
    assert value("d/dt(t^3)") == 12
    assert value("softplus(0)") == pytest.approx(math.log(2))
    assert value("pi") == pytest.approx(math.pi)


def test_extends_overrides_and_alternatives(tmp_path):
    (tmp_path / "base.dfs").write_text(BASE)
    (tmp_path / "child.dfs").write_text(textwrap.dedent("""\
        spec child extends base
          param a = 3
          g2(t) = 2*lambda2(t)   # replaces the parent's g
          run steps = 11
        end
    """))
    child = compile_spec(load_spec(tmp_path / "child.dfs"))
    t = 0.3
    sigma = 3 * (1.5 - t)
    lam2 = 2 * 3 * sigma / (1 + t / 10) ** 2
    assert child.at("sigma", t) == pytest.approx(sigma)     # parent formula, child param
    assert child.at("g2", t) == pytest.approx(2 * lam2)
    assert child.run.steps == 11 and child.run.target == "grid25"  # run entries merge
    assert child.ir.description == "every construct of the language"
    # --set overrides a param
    assert compile_spec(load_spec(tmp_path / "child.dfs"), {"a": "4"}).at("sigma", 0) == pytest.approx(6)


def _meaning(spec):
    return ({t.name: sp.simplify(t.expr) for t in spec.ir.terms}, spec.ir.prior, spec.run.describe(),
            {p.name: p.default for p in spec.ir.params})


@pytest.mark.parametrize("preset", sorted(p.stem for p in preset_dir().glob("*.dfs")))
def test_yaml_twin_has_the_same_meaning(tmp_path, preset):
    """dfs -> yaml -> dfs round trip: same IR, and the YAML itself compiles to the same spec."""
    syn = read_spec_file(preset_dir() / f"{preset}.dfs")
    ytext = to_yaml(syn)
    ypath = tmp_path / f"{preset}.yaml"
    ypath.write_text(ytext)
    # parent lookup: the YAML sits in tmp_path, its parent is found among the presets
    a = compile_spec(load_spec(preset_dir() / f"{preset}.dfs"))
    b = compile_spec(load_spec(ypath))
    ma, mb = _meaning(a), _meaning(b)
    assert ma[0] == mb[0] and ma[2] == mb[2] and ma[3] == mb[3]
    assert (ma[1].kind, ma[1].kwargs) == (mb[1].kind, mb[1].kwargs)
    back = parse_dfs(to_dfs(read_spec_file(ypath)), "back.dfs")
    assert to_dfs(back) == to_dfs(syn)


def test_yaml_errors_point_into_the_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("spec: bad\nextends: ve_sde\ndefine:\n  beta(t): g2(t)/2 + nothing\n")
    with pytest.raises(DfcError) as info:
        load_spec(p)
    assert info.value.span.line == 4 and info.value.span.column == 22
    p.write_text("spec: bad\nextends: ve_sde\nrun:\n  steps: [1, 2]\n")
    with pytest.raises(DfcError) as info:
        compile_spec(load_spec(p))
    assert info.value.span.line == 4 and "whole number" in info.value.message or "number" in info.value.message


# ---- fuzzing: whatever the text, the front end answers with a DfcError or a spec

ALPHABET = st.sampled_from(list("()+-*/^=,[]\"#\n .0123456789eE") + [
    "spec ", "end", "param ", "prior ", "run ", "extends ", "sigma(t)", "u(t)", "g2(t)", "lambda2(t)",
    "beta(t)", "f(x, t)", "D(x, t)", "d/dt", "t", "x", "exp", "sqrt", "min", "clamp", "kappa", " = ",
    "normal(scale = 1)", "target = ring8", "steps = 3",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_fuzz_parser_only_raises_dfc_errors(tmp_path_factory, text):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "f.dfs"
    path.write_text(text)
    try:
        compile_spec(load_spec(path))
    except DfcError as exc:
        assert exc.render().startswith("error:")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_fuzz_mutated_preset(tmp_path_factory, junk):
    text = (preset_dir() / "diffusion_gan.dfs").read_text()
    cut = len(junk) % max(1, len(text))
    path = Path(tmp_path_factory.mktemp("fuzz")) / "m.dfs"
    path.write_text(text[:cut] + junk + text[cut:])
    try:
        compile_spec(load_spec(path))
    except DfcError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_fuzz_yaml(tmp_path_factory, text):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "y.yaml"
    path.write_text("spec: y\nextends: ve_sde\n" + text)
    try:
        compile_spec(load_spec(path))
    except DfcError:
        pass


def test_numeric_lowering_matches_sympy():
    from dfc.symbolic import lower

    e = sp.exp(-T) * X + sp.Max(T, sp.Rational(1, 2)) * sp.sqrt(T + 1) + sp.Abs(X) ** 3
    fn = lower(e, (X, T))
    xs, ts = np.array([-1.0, 0.2, 3.0]), np.array([0.1, 0.7, 2.0])
    want = [float(e.subs({X: x, T: t})) for x, t in zip(xs, ts)]
    assert np.allclose(fn(xs, ts), want)
    assert fn(0.2, 0.7) == pytest.approx(want[1])
