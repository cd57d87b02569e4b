"""dfc outside its source tree (issue 12, item 4): suites as package data, `dfc bench --out`, the
default results folder, the peers' install hint printed as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dfc.bench as b
from dfc.cli import app


def test_suites_are_package_data():
    from importlib import resources

    assert b.SUITES == Path(str(resources.files("dfc.suites")))
    assert {"default", "quick"} <= {p.stem for p in b.SUITES.glob("*.yaml")}
    assert b.load_suite("quick")["name"] == "quick"


def test_results_go_to_out_or_bench_results(tmp_path, monkeypatch):
    assert b.results_dir(tmp_path / "mine") == tmp_path / "mine"
    assert b.results_dir() == b.RESULTS and b.results_md(b.RESULTS) == b.ROOT / "benchmarks" / "RESULTS.md"
    monkeypatch.chdir(tmp_path)  # outside the source tree
    assert b.results_dir() == tmp_path / "bench-results"
    assert b.results_md(tmp_path / "bench-results") == tmp_path / "bench-results" / "RESULTS.md"


def test_bench_out_holds_cache_and_results_and_the_peer_hint_is_literal(tmp_path, monkeypatch):
    import dfc.peers

    monkeypatch.setattr(dfc.peers, "kdiffusion_sampling", lambda: None)
    monkeypatch.setattr(dfc.peers.peers_diffusers, "diffusers_module", lambda: None)  # no peer cells at all
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100", "--out", "out"])
    assert r.exit_code == 0, r.output
    assert 'pip install -e ".[peers]" && pip install --no-deps k-diffusion' in r.output  # not eaten as markup
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 2  # the floor and the spec's cell
    assert (tmp_path / "out" / "ve_ode-bench" / "results.csv").exists()
    assert not (tmp_path / "bench-results").exists()


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_quick_suite(tmp_path):
    """Build a wheel, install it (no deps) into a fresh venv that borrows this one's libraries, and run
    `dfc bench --quick` from an unrelated folder: suites, specs and grammar come from the package."""
    import site
    import subprocess
    import sys

    import shutil

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # build from a copy: a build in the tree would leave build/ behind
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "results", "runs",
                                                              ".hypothesis", ".pytest_cache", "__pycache__"))
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src)
    [wheel] = (tmp_path / "dist").glob("dfc-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    [purelib] = venv.glob("lib/python*/site-packages")
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # torch & co., not dfc
    py = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = "import sys; from dfc.cli import main; sys.argv = ['dfc'] + sys.argv[1:]; main()"
    env = {**os.environ, "DFC_CACHE": str(tmp_path / "cache")}
    out = run(py, "-c", "import dfc, dfc.bench; print(dfc.bench.SUITES)", cwd=work, env=env).stdout
    assert str(purelib) in out  # the installed package's suites, not the source tree's
    r = run(py, "-c", code, "bench", "--quick", "--jobs", "2", cwd=work, env=env)
    assert (work / "bench-results" / "quick" / "results.csv").exists(), r.stdout + r.stderr
    assert len(list((work / "bench-results" / "cache").glob("*.json"))) > 10


def test_the_cli_starts_without_torch():
    """`dfc --help` and a command's --help answer in well under a second: loading the CLI imports no
    torch (about 3 s on 2 cores); each command imports what it runs."""
    import subprocess
    import sys

    code = "import sys, dfc.cli; print(sorted(m for m in ('torch', 'scipy', 'sympy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
