"""`dfc bench`: cells, cache and resume, floor rows, Pareto fronts, peers, mixture metrics."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import dfc.bench as b
from dfc.cli import app
from dfc.metrics import mode_metrics
from dfc.targets import make_target

TINY = {"name": "tiny", "specs": ["ve_ode", "diffusion_gan"], "peers": [], "targets": ["ring8"], "nfe": [4, 8],
        "seeds": [0], "samples": 200, "nll_targets": ["ring8"], "nll_points": 50}


def test_cells_run_cache_and_resume(tmp_path, monkeypatch):
    cells = b.suite_cells(TINY)
    assert sum(c.kind == "floor" for c in cells) == 1 and sum(c.kind == "nll" for c in cells) == 2
    records = b.run_cells(cells, tmp_path)
    assert len(records) == len(cells) == len(list(tmp_path.glob("*.json")))
    specs = [r for r in records if r["kind"] == "spec"]
    assert {r["nfe"] for r in specs} == {4, 8}  # NFE budgets are spent exactly (Euler: one per step)
    assert all(r["sliced_w2"] is not None and r["sliced_w2"] > 0 for r in specs)

    calls = []
    real = b.run_cell
    monkeypatch.setattr(b, "run_cell", lambda c: calls.append(c) or real(c))
    again = b.run_cells(cells, tmp_path)
    assert calls == [] and again == records  # everything cached: nothing recomputed
    victim = cells[2]
    (tmp_path / f"{victim.key}.json").unlink()
    b.run_cells(cells, tmp_path)
    assert calls == [victim]  # only the missing cell


def test_tables_have_a_floor_row_and_plots(tmp_path):
    df = b.frame(b.run_cells(b.suite_cells(TINY), tmp_path / "cache"))
    summ = b.summary(df)
    table = b.wide(summ, "ring8")
    assert table.index[0] == "floor" and "NFE 4" in table.columns and "NLL" in table.columns
    assert table.loc["ve_ode", "NLL"] == pytest.approx(table.loc["diffusion_gan", "NLL"], abs=0.05)
    paths = b.write_results(df, tmp_path / "out")
    assert paths["ring8_nfe"].read_bytes()[:4] == b"\x89PNG" and "floor" in paths["markdown"].read_text()


def test_pareto_front():
    pts = [(1, 5.0, "a"), (2, 3.0, "b"), (2, 4.0, "c"), (3, 3.5, "d"), (4, 1.0, "e"), (5, 1.0, "f")]
    assert [p[2] for p in b.pareto(pts)] == ["a", "b", "e"]


def test_sweep_grid():
    grid = b.parse_sweeps(["kappa=0,0.5", "eta=1,2"])
    assert grid == [(("kappa", "0"), ("eta", "1")), (("kappa", "0"), ("eta", "2")),
                    (("kappa", "0.5"), ("eta", "1")), (("kappa", "0.5"), ("eta", "2"))]


def test_peers_skipped_with_a_message_when_absent(tmp_path, monkeypatch):
    import dfc.peers

    monkeypatch.setattr(b, "RESULTS", tmp_path)
    monkeypatch.setattr(dfc.peers, "kdiffusion_sampling", lambda: None)
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100"])
    assert r.exit_code == 0, r.output
    assert "k-diffusion is not installed" in r.output and "dpmpp" not in r.output


def test_mode_metrics_known_answers():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    at_means = means.repeat(25, 1)
    assert mode_metrics(at_means, means, 0.1) == {"modes": 1.0, "hq": 1.0}
    one_mode = means[:1].repeat(100, 1)
    assert mode_metrics(one_mode, means, 0.1) == {"modes": 0.25, "hq": 1.0}
    half_far = torch.cat([at_means[:50], torch.full((50, 2), 5.0)])
    assert mode_metrics(half_far, means, 0.1)["hq"] == 0.5


def test_sixteen_dimensional_targets_are_fixed():
    g = make_target("gauss16")
    m, c = g.gaussian
    assert m.shape == (16,) and torch.allclose(torch.linalg.eigvalsh(c.double()).min(), torch.tensor(0.1, dtype=torch.float64))
    assert torch.equal(make_target("gmm16").sample(5, torch.Generator().manual_seed(0)),
                       make_target("gmm16").sample(5, torch.Generator().manual_seed(0)))
    assert make_target("gmm16").num_components == 8


def test_quality_of_a_perfect_gaussian_sampler():
    t = make_target("gauss16")
    x = t.sample(4000, torch.Generator().manual_seed(1))
    ref = t.sample(4000, torch.Generator().manual_seed(2))
    q = b.quality(t, x, ref.double())
    assert q["gauss_kl"] < 0.05 and q["finite"] and math.isfinite(q["sliced_w2"])
