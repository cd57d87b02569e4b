"""`torchrun -m dfc train score|disc`: data-parallel training equals one process at the same global
batch and seed, and resumes across a change of the process count.

Tolerance. The K ranks' slices of a step's batch are exactly the one-process batch (dfc.ddp), so
the runs differ only by float32 rounding: the all-reduce adds the ranks' gradient sums in another
order than one process's batched sum. Measured over 200 steps of `train score`: the losses differ
by at most ~1.3e-7 relative and the weights by ~1.4e-7, the preview's sliced W2 by ~2e-8. LOSS_RTOL
= 1e-5 leaves about 100x for rounding that Adam amplifies, yet is 1000x below the step-to-step
change of the loss (~1e-2): a rank that trained on another part of the data (or all of it, or
half of the gradient) fails it at the first step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dfc import checkpoint
from dfc.cli import app
from dfc.ddp import World, from_env
from dfc.errors import ConfigError

from conftest import SPECS

LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
METRIC_ATOL = 1e-4
SCORE = ["train", "score", "--target", "ring8", "--points", "2000", "--steps", "200", "--batch", "128", "--hidden",
         "32", "--depth", "1", "--save-every", "20", "--preview", "300"]
DISC = ["train", "disc", str(SPECS / "thm2_gan.dfs"), "--target", "gaussian(mean = [1.0, -0.5], cov = 0.5)",
        "--iters", "10", "--batch", "128", "--particles", "300", "--hidden", "16", "--depth", "1", "--samples", "0"]


def torchrun(args: list[str], nproc: int = 2, **kw) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node=nproc -m dfc ARGS` with this interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "dfc",
           *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def one_process(args: list[str]) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output


def same_state(a: Path, b: Path, kind: str, skip=("state.",)) -> None:
    """Two checkpoints agree: every float tensor within WEIGHT_ATOL (losses within LOSS_RTOL)."""
    ta, ha = checkpoint.load(a, kind)
    tb, hb = checkpoint.load(b, kind)
    assert ta.keys() == tb.keys() and ha["progress"] == hb["progress"]
    for k in ta:
        if k.startswith(skip) or not ta[k].dtype.is_floating_point:
            continue
        if k.startswith("log."):
            torch.testing.assert_close(tb[k], ta[k], rtol=LOSS_RTOL, atol=0, msg=k)
        else:
            torch.testing.assert_close(tb[k], ta[k], rtol=0, atol=WEIGHT_ATOL, msg=k)


def test_torchrun_score_matches_one_process_and_resumes_with_another_count(tmp_path):
    one_process([*SCORE, "--out", str(tmp_path / "one")])
    run = torchrun([*SCORE, "--out", str(tmp_path / "two")])
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert out.count("dfc train score:") == 1  # rank 0 alone reports (and writes)
    same_state(tmp_path / "one" / "score.safetensors", tmp_path / "two" / "score.safetensors", "score")
    first, second = (json.loads((tmp_path / d / "train.json").read_text())["preview"] for d in ("one", "two"))
    assert abs(first["sliced_w2"] - second["sliced_w2"]) < METRIC_ATOL

    # interrupted with two processes (Ctrl-C reaches one rank: both stop at the same step, rank 0 saves) ...
    cut = tmp_path / "cut" / "score.safetensors"
    run = torchrun([*SCORE, "--out", str(cut.parent)], start_new_session=True)
    import psutil

    while not cut.exists() and run.poll() is None:
        time.sleep(0.02)
    ranks = psutil.Process(run.pid).children()
    assert len(ranks) == 2, "torchrun's workers are gone before the interrupt"
    os.kill(ranks[-1].pid, signal.SIGINT)
    out, _ = run.communicate(timeout=300)
    step = checkpoint.load(cut, "score")[1]["progress"]["step"]
    assert run.returncode != 0 and 0 < step < 200, out
    # ... and resumed in one process: the uninterrupted run's weights and losses
    one_process([*SCORE, "--out", str(cut.parent), "--resume"])
    same_state(tmp_path / "one" / "score.safetensors", cut, "score")


def test_torchrun_disc_wraps_only_the_active_network_and_resumes_a_one_process_stack(tmp_path, monkeypatch):
    one_process([*DISC, "--out", str(tmp_path / "one")])

    from contextlib import contextmanager

    import dfc.train_cli as tc

    @contextmanager
    def interrupt_in_step_5(world, description, total):
        def update(i, n, *_):
            if i == 10 * 4 + 3:
                raise KeyboardInterrupt

        yield update

    monkeypatch.setattr(tc, "rank_progress", interrupt_in_step_5)
    r = CliRunner().invoke(app, [*DISC, "--out", str(tmp_path / "cut")])
    assert r.exit_code == 130, r.output
    cut = tmp_path / "cut" / "stack.safetensors"
    assert checkpoint.load(cut, "disc")[1]["progress"]["step"] == 4
    run = torchrun([*DISC, "--out", str(cut.parent), "--resume"])  # 8 more steps, each a new network under DDP
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    same_state(tmp_path / "one" / "stack.safetensors", cut, "disc")


def test_the_world_splits_a_batch_into_the_whole_batch():
    for n, k in ((128, 2), (10, 3), (7, 7)):
        parts = [World(r, k).shard(n) for r in range(k)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
    values = torch.arange(12.0).reshape(6, 2)
    assert World().mean(values, 6) == values.mean()
    assert sum(World(r, 3).mean(values[World(r, 3).shard(6)], 6) for r in range(3)) / 3 == pytest.approx(5.5)


def test_the_world_comes_from_torchrun_environment():
    assert from_env({}) == World() and from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    for env in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "x"}):
        with pytest.raises(ConfigError, match="torchrun"):
            from_env(env)
