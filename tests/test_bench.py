"""`dfc bench`: cells, cache and resume, floor rows, NFE accounting, Pareto fronts, peers, report."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import dfc.bench as b
from dfc.cli import app
from dfc.errors import ConfigError
from dfc.peers import PEERS, kdiffusion_sampling, steps_for
from dfc.spec import preset_dir
from dfc.targets import make_target

TINY = {"name": "tiny", "specs": ["ve_ode", "diffusion_gan"], "peers": [], "targets": ["ring8"], "nfe": [4, 8],
        "seeds": [0], "samples": 200, "nll_targets": ["ring8"], "nll_points": 50}
needs_kdiffusion = pytest.mark.skipif(kdiffusion_sampling() is None, reason="k-diffusion is not installed")


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return b.run_cells(b.suite_cells(TINY), cache), cache


def test_cells_run_cache_and_resume(tiny_records, monkeypatch):
    records, cache = tiny_records
    cells = b.suite_cells(TINY)
    assert sum(c.kind == "floor" for c in cells) == 1 and sum(c.kind == "nll" for c in cells) == 2
    assert len(records) == len(cells) == len(list(cache.glob("*.json")))
    specs = [r for r in records if r["kind"] == "spec"]
    assert {r["nfe"] for r in specs} == {4, 8}  # NFE budgets are spent exactly (Euler: one per step)
    assert all(r["sliced_w2"] > 0 and "error" not in r for r in specs)

    calls = []
    real = b.run_cell
    monkeypatch.setattr(b, "run_cell", lambda c: calls.append(c) or real(c))
    again = b.run_cells(cells, cache)
    assert calls == [] and again == records  # everything cached: nothing recomputed
    victim = cells[2]
    (cache / f"{victim.key}.json").unlink()
    b.run_cells(cells, cache)
    assert calls == [victim]  # only the missing cell


def test_an_edited_spec_is_recomputed(tmp_path):
    spec = tmp_path / "mine.dfs"
    spec.write_text('spec mine extends ve_sde "mine"\n  param eta = 0.5\nend\n')
    suite = {**TINY, "specs": [str(spec)], "nfe": [4], "samples": 50, "nll_targets": []}
    first = b.run_cells(b.suite_cells(suite), tmp_path / "cache")
    assert b.run_cells(b.suite_cells(suite), tmp_path / "cache") == first  # unchanged: all cached
    spec.write_text('spec mine extends ve_sde "mine"\n  param eta = 0\nend\n')
    cells = b.suite_cells(suite)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    again = b.run_cells(cells, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3  # the spec cell ran again, the floor did not
    assert again[1]["sliced_w2"] != first[1]["sliced_w2"] and again[1]["label"] == "mine"


@needs_kdiffusion
def test_another_version_of_a_peer_library_is_recomputed(tmp_path, monkeypatch):
    import dfc.peers

    suite = {**TINY, "specs": [], "peers": ["euler"], "nfe": [4], "samples": 50, "nll_targets": []}
    (floor, peer), installed = b.suite_cells(suite), dfc.peers.library_version("k-diffusion")
    assert installed and peer.source == f"k-diffusion {installed}"
    first = b.run_cells([floor, peer], tmp_path / "cache")
    assert first[1]["library"] == peer.source
    monkeypatch.setattr(dfc.peers, "library_version", lambda library: "0.0.1")  # an upgrade, as the cache sees it
    again = b.suite_cells(suite)
    assert again[0].key == floor.key and again[1].key != peer.key and again[1].source == "k-diffusion 0.0.1"
    _, todo = b.cached_records(again, tmp_path / "cache")
    assert todo == [again[1]]  # the peer's row is computed again, the floor is not
    monkeypatch.setattr(dfc.peers, "library_version", lambda library: "")
    assert b.suite_cells(suite)[1].source == ""


def test_a_crashed_cell_is_reported_and_not_cached(tmp_path, monkeypatch):
    def boom(cell, target, ref, scales):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(b, "_run_spec", boom)
    cell = b.Cell("spec", "ve_ode", "ring8", 4, 0, 50)
    [rec] = b.run_cells([cell], tmp_path)
    assert rec["error"] == "RuntimeError: out of luck" and rec["crashed"]
    assert not (tmp_path / f"{cell.key}.json").exists()  # the next run retries it


def test_tables_have_a_floor_row_plots_and_a_report(tiny_records, tmp_path):
    df = b.frame(tiny_records[0])
    summ = b.summary(df)
    table = b.wide(summ, "ring8")
    assert table.index[0] == "floor" and table.loc["floor", "kind"] == "floor"
    assert {"NFE 4", "NFE 8", "NLL", "wall s (max NFE)", "KDE s (max NFE)"} <= set(table.columns)
    # the floor: independent target draws against the same reference, at the same N
    assert 0 < table.loc["floor", "NFE 4"] == table.loc["floor", "NFE 8"] < 1
    assert table.loc["ve_ode", "NLL"] == pytest.approx(table.loc["diffusion_gan", "NLL"], abs=0.05)  # same marginals
    for metric in ("mmd", "energy", "modes", "hq"):  # every metric table has its floor row too
        assert b.wide(summ, "ring8", metric).index[0] == "floor"
    assert b.wide(summ, "ring8", "hq").loc["floor", "NFE 4"] > 0.99  # the target's own high-quality share
    paths = b.write_results(df, tmp_path / "tiny")
    assert paths["ring8_nfe"].read_bytes()[:4] == b"\x89PNG" and paths["ring8_wall"].exists()
    md = paths["markdown"].read_text()
    assert "| floor" in md and "Pareto front" in md and "ordered by wall time" in md
    out = b.report(tmp_path / "tiny", tmp_path / "RESULTS.md", notes=tmp_path / "none.md")
    text = out.read_text()
    assert text.startswith("# dfc benchmark results") and "Best spec and best peer at each NFE" in text
    assert "within a wall-time budget" in text and "The GAN part against DPM++ 2M and Heun" in text


def test_quick_suite_end_to_end_through_the_cli(tmp_path, monkeypatch):
    suite = tmp_path / "mini.yaml"
    suite.write_text(yaml.safe_dump({**TINY, "name": "mini", "specs": ["ve_ode"], "nfe": [4], "samples": 100,
                                     "nll_targets": [], "peers": ["euler"]}))
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    r = CliRunner().invoke(app, ["bench", "--suite", str(suite), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert "floor" in r.output and "ve_ode" in r.output
    assert (tmp_path / "results" / "mini" / "results.csv").exists()
    n = 3 - (kdiffusion_sampling() is None)
    assert len(list((tmp_path / "results" / "cache").glob("*.json"))) == n
    assert f"bench mini: {n} cells, 0 cached, {n} to compute" in r.output  # said before it starts
    again = CliRunner().invoke(app, ["bench", "--suite", str(suite), "--jobs", "1"])
    assert again.exit_code == 0 and f"bench mini: {n} cells, {n} cached, 0 to compute" in again.output


def test_a_spec_joins_a_suite_and_is_ranked_among_its_rows(tmp_path, monkeypatch):
    """`dfc bench SPEC --suite S`: SPEC runs on S's targets, budgets, seeds and N beside S's rows, which
    come from the cache when S has run; standing.md and the console say where SPEC stands."""
    suite = tmp_path / "mini.yaml"
    suite.write_text(yaml.safe_dump({**TINY, "name": "mini", "specs": ["ve_ode", "ve_sde"], "nfe": [4, 8],
                                     "samples": 200, "nll_targets": [], "peers": []}))
    spec = tmp_path / "half.dfs"
    spec.write_text('spec half extends diffusion_gan "half the GAN weight"\n  param kappa = 0.5\nend\n')
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    runner = CliRunner()
    assert runner.invoke(app, ["bench", "--suite", str(suite)]).exit_code == 0  # the suite alone: 5 cells
    r = runner.invoke(app, ["bench", str(spec), "--suite", str(suite), "--sweep", "kappa=0.5,1"])
    assert r.exit_code == 0, r.output
    assert "bench half-vs-mini: 9 cells, 5 cached, 4 to compute" in r.output  # the suite's rows from the cache
    folder = tmp_path / "results" / "half-vs-mini"
    summ = b.summary(b.frame(pd.read_csv(folder / "results.csv").to_dict("records")))
    table = pd.read_csv(folder / "summary.csv")
    assert set(table["label"]) == {"floor", "ve_ode", "ve_sde", "half kappa=0.5", "half kappa=1"}
    rows = b.standing(summ, ["half kappa=0.5", "half kappa=1"])
    assert len(rows) == 4 and set(rows["row"]) == {"half kappa=0.5", "half kappa=1"}
    for _, row in rows.iterrows():  # ranked among ve_ode and ve_sde (not its sibling): k of 3
        cell = summ[(summ["nfe_budget"] == row["NFE"]) & (summ["kind"] == "spec")].set_index("label")[b.METRIC]
        better = int((cell[["ve_ode", "ve_sde"]] < cell[row["row"]]).sum())
        assert row["rank"] == f"{better + 1} of 3"
        assert row["best other row"].split()[0] == cell[["ve_ode", "ve_sde"]].idxmin()
    text = (folder / "standing.md").read_text()
    assert "half kappa=0.5" in text and "rank" in text and "| ring8" in text
    assert "kappa=0.5" in r.output and "rank" in r.output  # printed too


def test_standing_ranks_and_calls_beyond_noise():
    rows = [("floor", "floor", 0.10, 0.02), ("spec", "mine", 0.30, 0.01), ("spec", "a", 0.20, 0.0),
            ("spec", "b", 0.31, 0.0), ("peer", "dpmpp_2m", 0.50, 0.0), ("spec", "bad", math.inf, math.nan)]
    summ = pd.DataFrame([{"target": "ring8", "kind": k, "label": lab, "nfe_budget": 8, b.METRIC: v,
                          f"{b.METRIC}_sd": sd, "floor_sd": 0.02 if k == "floor" else math.nan, "seeds": 4,
                          "wall_s": 1.0} for k, lab, v, sd in rows])
    (row,) = b.standing(summ, ["mine"]).to_dict("records")
    # δ = 2 · 0.02 / sqrt(4) = 0.02: 0.30 against 0.20 is worse, against the peer's 0.50 better
    assert row["rank"] == "2 of 5" and row["best other row"] == "a 0.200" and row["vs it"] == "worse"
    assert row["best peer"] == "dpmpp_2m (k-diffusion) 0.500" and row["vs peer"] == "better"
    assert row[b.METRIC] == "0.300 ± 0.010" and row["floor"] == 0.10
    summ.loc[summ["label"] == "a", b.METRIC] = 0.29  # within δ of 0.30: a tie, and still ranked above
    (row,) = b.standing(summ, ["mine"]).to_dict("records")
    assert row["rank"] == "2 of 5" and row["vs it"] == "tie"
    (row,) = b.standing(summ, ["bad"]).to_dict("records")  # a diverged row is ranked last and loses
    assert row["rank"] == "5 of 5" and row["vs it"] == "worse" and row[b.METRIC] == math.inf


def test_bad_spec_benchmark_budgets_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    for bad in ("", "4,,8", "four"):
        r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", bad, "--no-peers"])
        assert r.exit_code == 2 and "comma-separated whole numbers" in r.output and "Traceback" not in r.output


def test_a_spec_with_a_suite_refuses_its_own_settings_and_a_name_clash(tmp_path, monkeypatch):
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    spec = tmp_path / "half.dfs"
    spec.write_text('spec half extends diffusion_gan "half the GAN weight"\n  param kappa = 0.5\nend\n')
    r = CliRunner().invoke(app, ["bench", str(spec), "--quick", "--samples", "300", "--nfe", "4"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--nfe, --samples set(s) a benchmark of SPEC alone" in r.output and "without --quick" in r.output
    r = CliRunner().invoke(app, ["bench", str(spec), "--quick", "--seeds", "0", "--peers"])  # a default, given
    assert r.exit_code == 2 and "--seeds, --peers/--no-peers set(s) a benchmark of SPEC alone" in r.output
    peer = tmp_path / "heun.dfs"
    peer.write_text(spec.read_text())
    r = CliRunner().invoke(app, ["bench", str(peer), "--quick"])
    assert r.exit_code == 2 and "has the name of the suite's peer 'heun'" in r.output
    clash = tmp_path / "ve_ode.dfs"
    clash.write_text(spec.read_text())
    r = CliRunner().invoke(app, ["bench", str(clash), "--quick"])
    assert r.exit_code == 2 and "has the name of the suite's spec 've_ode', and is another file" in r.output
    r = CliRunner().invoke(app, ["bench", "--all", "--quick"])
    assert r.exit_code == 2 and "one suite" in r.output
    quick = b.load_suite("quick")
    joined, own = b.join_suite(quick, str(preset_dir() / "ve_ode.dfs"), [(), (("solver", "heun"),)])
    assert own == ["ve_ode", "ve_ode solver=heun"]  # the suite's own spec by path: its own (cached) cells
    cells = b.suite_cells(joined)
    # heun: 2 targets × 3 NFE, and its exact NLL on the suite's NLL target (ring8); ve_ode's cells are the suite's
    assert len(cells) == len({c.key for c in cells}) == len(b.suite_cells(quick)) + 6 + 1
    assert [c.label for c in cells if c.kind == "nll" and c.sets] == ["ve_ode solver=heun"]


def test_a_busy_machine_is_named_before_timings_are_taken():
    """Wall times of cells that share cores with other work are inflated: the bench says so when
    the load average and --jobs exceed the cores, and is quiet on an idle machine."""
    assert b.busy_cores(2, busy=0.6, cores=2) is None  # idle: background noise only
    assert b.busy_cores(1, busy=1.0, cores=2) is None  # one busy core, one job: room for it
    warning = b.busy_cores(2, busy=1.3, cores=2)
    assert "using about 1.3 of its 2 cores" in warning and "--jobs 2" in warning and "inflated" in warning
    assert b.busy_cores(8, busy=1.3, cores=16) is None
    now = b.cores_in_use(0.05)  # what the machine uses now, where /proc/stat exists
    assert now is None or 0.0 <= now <= (os.cpu_count() or 1) + 1e-9


def test_bad_suites_and_options_exit_2(tmp_path):
    with pytest.raises(ConfigError, match="unknown peer"):
        b.check_suite({**TINY, "peers": ["dpmpp_9"]})
    with pytest.raises(ConfigError):
        b.check_suite({**TINY, "targets": ["ring9"]})
    runner = CliRunner()
    for args in (["bench"], ["bench", "--all", "--quick"], ["bench", "--all", "--sweep", "kappa=1"],
                 ["bench", "--suite", "nope"], ["bench", "ve_ode", "--sweep", "kappa"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)


def test_suite_variants_run_a_spec_again_with_other_settings():
    suite = b.check_suite({**TINY, "specs": ["ve_ode"], "nll_targets": [],
                           "variants": {"ve_ode": [{"solver": "dpmpp_2m"}, {"solver": "heun", "eta": 0}]}})
    runs = {(c.name, c.sets) for c in b.suite_cells(suite) if c.kind == "spec"}
    assert runs == {("ve_ode", ()), ("ve_ode", (("solver", "dpmpp_2m"),)),
                    ("ve_ode", (("eta", "0"), ("solver", "heun")))}
    labels = {c.label for c in b.suite_cells(suite) if c.kind == "spec"}
    assert "ve_ode solver=dpmpp_2m" in labels
    for bad, match in (({"ve_ode": [{"solver": "dpmpp_9"}]}, "variant of ve_ode"),
                       ({"ve_ode": [{"kappa": 1}]}, "variant of ve_ode"),
                       ({"ve_ode": {"solver": "heun"}}, "list of mappings"),
                       ({"ve_ode": [{}]}, "list of mappings")):
        with pytest.raises(ConfigError, match=match):
            b.check_suite({**TINY, "variants": bad})


def test_pareto_front():
    pts = [(1, 5.0, "a"), (2, 3.0, "b"), (2, 4.0, "c"), (3, 3.5, "d"), (4, 1.0, "e"), (5, 1.0, "f"),
           (0.5, math.inf, "diverged"), (6, math.nan, "failed")]
    assert [p[2] for p in b.pareto(pts)] == ["a", "b", "e"]
    scores = [(1, 0.2, "a"), (2, 0.9, "b"), (3, 0.5, "c"), (4, 1.0, "d")]  # higher is better
    assert [p[2] for p in b.pareto(scores, lower_is_better=False)] == ["a", "b", "d"]


def test_sweep_grid():
    grid = b.parse_sweeps(["kappa=0,0.5", "eta=1,2"])
    assert grid == [(("kappa", "0"), ("eta", "1")), (("kappa", "0"), ("eta", "2")),
                    (("kappa", "0.5"), ("eta", "1")), (("kappa", "0.5"), ("eta", "2"))]
    assert b.parse_sweeps(["grid=uniform;karras(rho = 7)"], {"eta": "1"}) == [
        (("eta", "1"), ("grid", "uniform")), (("eta", "1"), ("grid", "karras(rho = 7)"))]


def test_nfe_accounting_and_denoise_rule():
    # k-diffusion: n Karras sigmas and a final 0; Euler-type n calls, Heun and DPM-2 2n - 1
    assert [steps_for("euler", b_) for b_ in (4, 8)] == [4, 8]
    assert [steps_for("heun", b_) for b_ in (4, 8, 16)] == [2, 4, 8]  # 3, 7, 15 calls
    assert all(PEERS[p][1](steps_for(p, 8)) <= 8 for p in PEERS)
    # a score-based spec ends like k-diffusion: its last evaluation is the step to σ = 0
    s = b.bench_settings(b.Cell("spec", "ve_ode", "ring8", 8, 0, 10))
    assert (s["steps"], s["denoise"]) == ("7", "true")
    s = b.bench_settings(b.Cell("spec", "ve_ode", "ring8", 8, 0, 10, (("solver", "heun"),)))
    assert (s["steps"], s["denoise"]) == ("3", "true")  # 2 x 3 + 1 = 7 calls, as k-diffusion's Heun at 8
    s = b.bench_settings(b.Cell("spec", "ve_ode", "ring8", 8, 0, 10, (("denoise", "false"),)))
    assert (s["steps"], s["denoise"]) == ("8", "false")  # a sweep's own choice wins
    s = b.bench_settings(b.Cell("spec", "diffflow_gan", "ring8", 8, 0, 10))
    assert (s["steps"], s["denoise"]) == ("8", "false")  # ends at σ = 0.05: no Tweedie step


@needs_kdiffusion
def test_ve_ode_in_the_sigma_clock_is_kdiffusion_euler():
    """MATH §9: Euler on the VE ODE in the σ clock is k-diffusion's Euler step, so with the same
    noise, grid and final step to σ = 0 the two rows are the same samples and the same NFE."""
    from dfc.peers import run_peer
    from dfc.sample import simulate

    target = make_target("ring8").to(dtype=torch.float32)
    for nfe in (4, 8):
        x, cost = run_peer("euler", target, 300, nfe, 3)
        cell = b.Cell("spec", "ve_ode", "ring8", nfe, 3, 300)
        y, spec_cost = simulate(b._compile(cell, b.bench_settings(cell)), target)
        assert cost["nfe"] == spec_cost["nfe"] == nfe
        torch.testing.assert_close(y, x, rtol=0, atol=1e-3)


@needs_kdiffusion
def test_peer_rows_run_with_the_exact_denoiser():
    from dfc.peers import run_peer

    target = make_target("ring8").to(dtype=torch.float32)
    for name in PEERS:
        x, cost = run_peer(name, target, 100, 8, 0)
        assert x.shape == (100, 2) and torch.isfinite(x).all() and cost["nfe"] <= 8
        again, _ = run_peer(name, target, 100, 8, 0)
        assert torch.equal(x, again)  # seeded, the stochastic ones too


def test_peers_skipped_with_a_message_when_absent(tmp_path, monkeypatch):
    import dfc.peers

    monkeypatch.setattr(b, "RESULTS", tmp_path)
    monkeypatch.setattr(dfc.peers, "kdiffusion_sampling", lambda: None)
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100"])
    assert r.exit_code == 0, r.output
    assert "k-diffusion is not installed" in r.output and "dpmpp" not in r.output


def test_quality_of_a_perfect_gaussian_sampler():
    t = make_target("gauss16")
    x = t.sample(4000, torch.Generator().manual_seed(1))
    ref = t.sample(4000, torch.Generator().manual_seed(2))
    q = b.quality(t, x, ref.double())
    assert q["gauss_kl"] < 0.05 and q["finite"] and math.isfinite(q["sliced_w2"])
    bad = b.quality(t, torch.full((10, 16), math.nan), ref.double())
    assert not bad["finite"] and bad["sliced_w2"] == math.inf


def test_diverged_runs_show_as_div_and_sort_last():
    recs = [{"kind": "spec", "label": "a", "target": "t", "nfe_budget": 4, "seed": s, "samples": 10, "nfe": 4,
             "wall_s": 1.0, "estimator_s": 0.0, "sliced_w2": v} for s, v in ((0, 0.5), (1, "inf"))]
    recs += [{"kind": "spec", "label": "b", "target": "t", "nfe_budget": 4, "seed": 0, "samples": 10, "nfe": 4,
              "wall_s": 1.0, "estimator_s": 0.0, "sliced_w2": 0.7},
             {"kind": "floor", "label": "floor", "target": "t", "nfe_budget": 0, "seed": 0, "samples": 10, "nfe": 0,
              "wall_s": 0.0, "estimator_s": 0.0, "sliced_w2": 0.1}]
    table = b.wide(b.summary(b.frame(recs)), "t")
    assert list(table.index) == ["floor", "b", "a"]  # one diverged seed makes the mean diverge
    assert b.fmt(table.loc["a", "NFE 4"]) == "div." and b.fmt(1.5e17) == "1.50e+17"


def test_parallel_cells_give_the_serial_results(tmp_path):
    cells = [b.Cell("floor", "", "ring8", 0, 0, 100), b.Cell("spec", "ve_sde", "ring8", 4, 0, 100),
             b.Cell("spec", "ve_ode", "ring8", 4, 1, 100)]
    serial = b.run_cells(cells, tmp_path / "a")
    parallel = b.run_cells(cells, tmp_path / "b", jobs=2)
    for s, p in zip(serial, parallel):
        assert s["label"] == p["label"] and s["sliced_w2"] == p["sliced_w2"]  # seeded: the same samples
