"""`dfc run`'s metrics levels and its floor, computed once and cached on disk (dfc.floors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dfc import floors
from dfc.cli import app
from dfc.errors import ConfigError
from dfc.sample import FLOOR_DRAWS, build, evaluate, make_run_target


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test caches under its own tmp folder, never in the home folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DFC_CACHE", str(folder))
    return folder


def setup(n: int, seed: int = 0):
    spec = build("ve_ode", None, {"target": "ring8", "samples": str(n), "seed": str(seed)})
    target = make_run_target(spec)
    u = spec.at("u", spec.t1)
    x = target.sample(n, torch.Generator().manual_seed(99)) / u  # a "sampler" that is the target itself
    return spec, target, x


def floor_part(m: dict) -> dict:
    return {k: m[k] for k in floors.FLOOR_KEYS}


real_compute_floor = floors.compute_floor


def no_floor(*args, **kwargs):
    raise AssertionError("the floor was recomputed instead of read from the cache")


@pytest.fixture
def small_blocks(monkeypatch):
    """The fast level's blocks at 300 points: several blocks at test sizes."""
    monkeypatch.setattr(floors, "BLOCK", 300)


@pytest.mark.parametrize("level, n", [("full", 500), ("fast", 1500)])
def test_cached_floor_equals_a_fresh_one_and_is_not_recomputed(cache, tmp_path, monkeypatch, small_blocks,
                                                                level, n):
    spec, target, x = setup(n)
    first = evaluate(spec, target, x, level)
    assert first["metrics_level"] == level and first["floor_cached"] is False
    files = list((cache / "floors").glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["key"]["samples"] == n and record["key"]["level"] == level
    assert record["key"]["draws"] == FLOOR_DRAWS and record["key"]["version"] == floors.VERSION

    monkeypatch.setattr(floors, "compute_floor", no_floor)
    second = evaluate(spec, target, x, level)
    assert second["floor_cached"] is True and second["floor_s"] == 0.0
    assert floor_part(second) == floor_part(first)  # exactly: JSON keeps every bit of a float
    assert {k: v for k, v in second.items() if k not in ("floor_cached", "floor_s", "metrics_s")} == \
           {k: v for k, v in first.items() if k not in ("floor_cached", "floor_s", "metrics_s")}

    monkeypatch.setattr(floors, "compute_floor", real_compute_floor)
    monkeypatch.setenv("DFC_CACHE", str(tmp_path / "elsewhere"))  # an empty cache: computed afresh
    fresh = evaluate(spec, target, x, level)
    assert fresh["floor_cached"] is False and floor_part(fresh) == floor_part(first)


def test_the_floor_has_a_spread_and_every_metric_its_standard_error(small_blocks):
    spec, target, x = setup(1500)
    fast = evaluate(spec, target, x, "fast")
    for key in ("sliced_w2_se", "mmd2_se", "mmd_se", "energy2_se", "energy_se"):
        assert fast[key] > 0
    for key in floors.FLOOR_KEYS:
        assert math.isfinite(fast[key])
    assert fast["floor_sd"] > 0 and fast["mmd2_floor_sd"] > 0 and fast["energy2_floor_sd"] > 0
    assert fast["mmd"] == math.sqrt(max(fast["mmd2"], 0.0))
    # the samples are target draws: each metric is within a few floor spreads of its floor
    for key, floor in (("sliced_w2", "floor"), ("mmd2", "mmd2_floor"), ("energy2", "energy2_floor")):
        assert abs(fast[key] - fast[floor]) < 4 * fast[floor + "_sd"]
    full = evaluate(spec, target, x, "full")
    assert full["mmd2_se"] is None and full["energy2_se"] is None and full["sliced_w2_se"] > 0
    assert full["sliced_w2"] == fast["sliced_w2"]  # the same directions and reference at both levels


def test_levels_auto_none_and_a_bad_level():
    spec, target, x = setup(300)
    assert evaluate(spec, target, x)["metrics_level"] == "full"  # auto, 300 <= FULL_MAX
    assert floors.resolve_level("auto", floors.FULL_MAX) == "full"
    assert floors.resolve_level("auto", floors.FULL_MAX + 1) == "fast"
    none = evaluate(spec, target, x, "none")
    assert none["metrics_level"] == "none" and "sliced_w2" not in none and "floor" not in none
    with pytest.raises(ConfigError, match="auto, full, fast, none"):
        evaluate(spec, target, x, "quick")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong key", "not a number", "empty"])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(cache, monkeypatch, damage):
    spec, target, x = setup(400)
    first = evaluate(spec, target, x, "full")
    (path,) = (cache / "floors").glob("*.json")
    good = path.read_text()
    record = json.loads(good)
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        path.write_text(good[: len(good) // 2])
    elif damage == "wrong key":
        record["key"]["samples"] += 1
        path.write_text(json.dumps(record))
    elif damage == "not a number":
        record["floor"]["mmd_floor"] = "0.1"
        path.write_text(json.dumps(record))
    else:
        path.write_text("")
    calls = []
    real = floors.compute_floor
    monkeypatch.setattr(floors, "compute_floor", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluate(spec, target, x, "full")
    assert calls == [1] and again["floor_cached"] is False
    assert floor_part(again) == floor_part(first)
    assert json.loads(path.read_text()) == json.loads(good)  # rewritten, whole


def test_the_key_follows_the_reference_draw_size_seed_and_level(cache):
    spec, target, x = setup(300)
    evaluate(spec, target, x, "full")
    evaluate(spec, target, x, "fast")
    spec1, target1, x1 = setup(300, seed=1)
    evaluate(spec1, target1, x1, "full")
    spec2, target2, x2 = setup(301)
    evaluate(spec2, target2, x2, "full")
    assert len(list((cache / "floors").glob("*.json"))) == 4
    ref = torch.zeros(5, 2)
    key = floors.floor_key(ref, 5, 0, "full", 4)
    assert floors.floor_key(ref.clone(), 5, 0, "full", 4) == key  # the bytes, not the object
    moved = ref.clone()
    moved[0, 0] = 1e-7
    assert floors.floor_key(moved, 5, 0, "full", 4)["reference"] != key["reference"]
    assert floors.floor_key(ref.double(), 5, 0, "full", 4)["reference"] != key["reference"]


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DFC_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert floors.cache_dir() == tmp_path / "a" / "floors"
    monkeypatch.delenv("DFC_CACHE")
    assert floors.cache_dir() == tmp_path / "xdg" / "dfc" / "floors"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert floors.cache_dir() == tmp_path / "home" / ".cache" / "dfc" / "floors"


def test_an_unwritable_cache_costs_only_the_recomputation(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DFC_CACHE", str(blocker))
    spec, target, x = setup(300)
    assert evaluate(spec, target, x, "full")["floor_cached"] is False
    assert evaluate(spec, target, x, "full")["floor_cached"] is False


def test_progress_reports_each_metric_and_ends_at_one():
    spec, target, x = setup(300)
    seen = []
    evaluate(spec, target, x, "fast", progress=lambda what, f: seen.append((what, f)))
    assert len(seen) == 3 * (1 + FLOOR_DRAWS) + 1
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("MMD" in w for w, _ in seen) and any("floor" in w for w, _ in seen)
    seen.clear()
    evaluate(spec, target, x, "fast", progress=lambda what, f: seen.append((what, f)))  # cached floor
    assert len(seen) == 3 + 1 and not any("floor" in w for w, _ in seen)


runner = CliRunner()


def test_cli_metrics_option(tmp_path):
    small = ["--samples", "300", "--steps", "4"]
    r = runner.invoke(app, ["run", "ve_ode", *small, "--metrics", "fast", "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["metrics_level"] == "fast" and "mmd2_se" in m and "floor_sd" in m and "energy_floor_sd" in m
    assert "sliced W2 ± se (floor ± sd)" in r.output and " ± " in r.output
    r = runner.invoke(app, ["run", "ve_ode", *small, "--metrics", "none", "--out", str(tmp_path / "n")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert m["metrics_level"] == "none" and "sliced_w2" not in m and "nfe" in m and "wall_s" in m
    assert "sliced W2" not in r.output and "MMD" not in r.output
    assert (tmp_path / "n" / "samples.png").exists()
    r = runner.invoke(app, ["run", "ve_ode", *small, "--metrics", "quick", "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "--metrics 'quick'" in r.output and "auto, full, fast, none" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "q").exists()
