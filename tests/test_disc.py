"""Algorithms 2 and 3 (MATH §5, §8): time-indexed discriminator stacks drive a spec's particles.

The reference is Theorem 2's flow (tests/specs/thm2_gan.dfs: β = 1, g = λ² = 0, constant σ, u = 1)
on an isotropic Gaussian target N(m, s I). There Q_t = N(m, c I), c = s + σ², and an Euler step
of size h with the exact GAN field s_Q − s_p = −(x − m)/c + (x − μ)/v is linear in x, so from
p_0 = N(μ_0, v_0 I) the particles' moments follow exactly

    μ' − m = (1 − h/c)(μ − m),        v' = (1 − h/c + h/v)² v.

A stack trained by Algorithm 2 replaces that field by ∇d_k; its particles must land near the
recursion's moments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfc import checkpoint
from dfc.cli import app
from dfc.data import training_data
from dfc.errors import DataError
from dfc.learned import score_record
from dfc.sample import build, make_run_target, simulate
from dfc.train import DiscConfig, train_disc

from conftest import SPECS

THM2 = SPECS / "thm2_gan.dfs"
M, S, S0, MU0, V0 = np.array([1.0, -0.5]), 0.5, 0.5, -1.0, 4.0
FAST = DiscConfig(iters=80, batch=512, particles=4000, hidden=64, depth=2)


def recursion(spec) -> tuple[np.ndarray, float]:
    c, ts = S + S0**2, spec.grid()
    mu, v = np.full(2, MU0), V0
    for h in np.diff(ts):
        mu, v = M + (1 - h / c) * (mu - M), (1 - h / c + h / v) ** 2 * v
    return mu, v


def train(tmp_path, cfg=FAST, spec_path=THM2, **kw):
    spec = build(spec_path)
    x, info = training_data(spec.run.describe()["target"], points=20000)
    log = train_disc(spec, x, info, make_run_target(spec), score_record(None, info["name"]), tmp_path, cfg, **kw)
    return spec, log


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return train(tmp_path_factory.mktemp("stack"))


def test_recursion_is_what_exact_fields_give():
    """The reference itself: the same spec on exact fields with a Gaussian-fit s_p (exact for
    Gaussian particles) follows the recursion to Monte-Carlo precision (20,000 particles)."""
    spec = build(THM2, None, {"samples": "20000"})
    x, _ = simulate(spec, make_run_target(spec))
    mu, v = recursion(spec)
    assert np.abs(x.double().mean(0).numpy() - mu).max() < 0.03
    assert np.abs(np.diag(np.cov(x.double().numpy().T)) / v - 1).max() < 0.03


@pytest.mark.parametrize("variant,tol_mu,tol_v", [("independent", 0.1, 0.1), ("shared", 0.15, 0.2)])
def test_algorithm2_follows_the_exact_flow(variant, tol_mu, tol_v, stack, tmp_path):
    """The particles of Algorithm 2 end within `tol_mu` of the recursion's mean and within `tol_v`
    (relative) of its variance. Measured: independent 0.045 and 7%, shared 0.09 and 14%. A learned
    field of 92% of the exact one (the shrinkage of a logistic fit after 80 steps per network)
    explains the lag; the bounds still fail a field that is off by a third in either direction
    (mean 0.41 or 0.94, against 0.78) or points the wrong way. One shared network, pulled between
    all times at once, fits less well (the reason Alg. 2 uses independent networks, MATH §5), hence
    its wider bounds."""
    spec, log = stack if variant == "independent" else train(tmp_path, DiscConfig(**{**FAST.__dict__,
                                                                                     "variant": variant}))
    p = log["particles"].double().numpy()
    mu, v = recursion(spec)
    assert np.abs(p.mean(0) - mu).max() < tol_mu, (p.mean(0), mu)
    assert np.abs(np.diag(np.cov(p.T)) / v - 1).max() < tol_v, (np.diag(np.cov(p.T)), v)
    assert p.mean(0)[0] - MU0 > 1.5  # it moved: from the prior's −1 to the target's 1, less the lag


def test_algorithm3_replays_algorithm2(stack):
    """Sampling with the stored stack (`fields = exact + disc(path = ...)`) from the training's draw
    of p_0 (same seed, same number of particles) retraces the training particles exactly: the
    networks are a generator made of discriminator gradient fields."""
    spec, log = stack
    run = build(THM2, None, {"fields": f'exact + disc(path = "{log["path"]}")', "samples": str(FAST.particles),
                             "seed": str(FAST.seed)})
    x, _ = simulate(run, make_run_target(run))
    assert torch.equal(x, log["particles"])


def test_resume_reaches_the_uninterrupted_stack(tmp_path):
    cfg = DiscConfig(iters=5, batch=64, particles=200, hidden=16, depth=1, warm_start=False)
    train(tmp_path / "whole", cfg)

    def interrupt(i, n, *_):
        if i == 5 * 4 + 3:  # inside the 5th of 12 steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", cfg, progress=interrupt)
    assert checkpoint.load(tmp_path / "cut" / "stack.safetensors", "disc")[1]["progress"]["step"] == 4
    with pytest.raises(DataError, match="unfinished"):
        build_run_with(tmp_path / "cut" / "stack.safetensors")
    train(tmp_path / "cut", cfg, resume=True)
    a, _ = checkpoint.load(tmp_path / "whole" / "stack.safetensors", "disc")
    b, _ = checkpoint.load(tmp_path / "cut" / "stack.safetensors", "disc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def build_run_with(path, **run):
    spec = build(THM2, None, {"fields": f'exact + disc(path = "{path}")', **run})
    return simulate(spec, make_run_target(spec))


@pytest.mark.parametrize("run,why", [
    ({"steps": "24"}, "networks sit on the grid of steps = 12"),
    ({"solver": "heun"}, "replay Euler steps"),
    ({"target": "ring8"}, "it was trained on 'gaussian"),
])
def test_a_stack_refuses_a_run_it_was_not_trained_for(stack, run, why):
    _, log = stack
    with pytest.raises(DataError, match=why):
        build_run_with(log["path"], **run)


def test_a_stack_refuses_other_parameters(stack, tmp_path):
    _, log = stack
    r = CliRunner().invoke(app, ["run", str(THM2), "--set", "s0=0.6", "--fields",
                                 f'exact + disc(path = "{log["path"]}")', "--out", str(tmp_path)])
    assert r.exit_code == 2 and "s0 = 0.5 in the stack, 0.6 here" in r.output and "Traceback" not in r.output


def test_a_spec_run_block_selects_the_stack(stack, tmp_path):
    """A researcher names learned fields in a spec's own run block: a child that changes only run
    entries moves particles as its parent does, so the parent's stack serves it (Algorithm 3 from the
    training's draw of p_0 retraces the training particles), with the path taken beside the spec file."""
    import shutil

    _, log = stack
    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copy(THM2, folder / "thm2_gan.dfs")
    shutil.copy(log["path"], folder / "stack.safetensors")
    (folder / "learned.dfs").write_text(
        'spec learned extends thm2_gan "Theorem 2 on its discriminator stack"\n'
        f'  run fields = exact + disc(path = "stack.safetensors"), samples = {FAST.particles}, seed = {FAST.seed}\n'
        "end\n")
    r = CliRunner().invoke(app, ["run", str(folder / "learned.dfs"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "out" / "samples.npy"), log["particles"].numpy())
    (folder / "other.dfs").write_text('spec other extends thm2_gan\n  beta(t) = 2\n'
                                      '  run fields = exact + disc(path = "stack.safetensors")\nend\n')
    r = CliRunner().invoke(app, ["run", str(folder / "other.dfs"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "trained for spec 'thm2_gan'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o2").exists()
    # the parent itself edited after training: same name, same parameters, other functions
    (folder / "thm2_gan.dfs").write_text(THM2.read_text().replace("beta(t) = 1", "beta(t) = 2"))
    r = CliRunner().invoke(app, ["run", str(folder / "thm2_gan.dfs"), "--fields",
                                 'exact + disc(path = "stack.safetensors")', "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "has changed since the stack was trained" in r.output


def test_dfc_train_disc_writes_the_stack_and_a_first_look(tmp_path):
    out = tmp_path / "stack"
    r = CliRunner().invoke(app, ["train", "disc", str(THM2), "--target", "gaussian(mean = [1.0, -0.5], cov = 0.5)",
                                 "--iters", "10", "--batch", "128", "--particles", "500", "--hidden", "16",
                                 "--samples", "500", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} >= {"stack.safetensors", "loss.png", "train.json", "samples.png",
                                               "samples.npy", "metrics.json"}
    assert "Alg. 3 sliced W2" in r.output


def test_dfc_train_score_on_digits_shows_a_grid(tmp_path):
    r = CliRunner().invoke(app, ["train", "score", "--target", "digits", "--steps", "20", "--batch", "64",
                                 "--hidden", "32", "--preview", "200", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "loss.png").exists()
