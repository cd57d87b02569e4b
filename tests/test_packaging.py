"""dfc outside its source tree (issue 12, item 4): suites as package data, `dfc bench --out`, the
default results folder, the peers' install hint printed as written."""

from __future__ import annotations

from pathlib import Path

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
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100", "--out", "out"])
    assert r.exit_code == 0, r.output
    assert 'pip install -e ".[peers]" && pip install --no-deps k-diffusion' in r.output  # not eaten as markup
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 2  # the floor and the spec's cell
    assert (tmp_path / "out" / "ve_ode-bench" / "results.csv").exists()
    assert not (tmp_path / "bench-results").exists()
