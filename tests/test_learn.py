"""Learned scores (MATH §5): DSM accuracy, exact resume, checkpoints that refuse bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfc import checkpoint
from dfc.cli import app
from dfc.errors import DataError
from dfc.learn import LearnedScore, ScoreConfig, make_data, score_error, train_score
from dfc.targets import make_target

from conftest import FAMILY_COV, FAMILY_MEAN

SMALL = ScoreConfig(steps=800, batch=512, hidden=64, depth=3, lr=2e-3, ema=0.99, checkpoint_every=10**9)


@pytest.fixture(scope="module")
def gaussian_score(tmp_path_factory):
    target = make_target("gaussian", {"mean": FAMILY_MEAN.tolist(), "cov": FAMILY_COV.tolist()})
    data = target.sample(20000, torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("score")
    train_score(data, out, SMALL)
    return target, out / "score.safetensors"


def test_dsm_learns_the_gaussian_score(gaussian_score):
    """Relative L2 error against the closed form −(S + σ²I)⁻¹(y − m) on samples of q_σ. It measures
    about 0.02 here; 0.1 leaves room for the Monte-Carlo noise of 800 DSM steps while an untrained or
    wrong network (error of order 1) fails."""
    target, path = gaussian_score
    errors = score_error(LearnedScore(path), target, sigmas=(0.5, 1.0, 2.0))
    assert all(e < 0.1 for e in errors.values()), errors


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    data = make_data("moons", 2000, 0)
    cfg = ScoreConfig(steps=40, batch=64, hidden=32, depth=2, checkpoint_every=20)
    train_score(data, tmp_path / "whole", cfg)

    def interrupt(step, *_):
        if step == 27:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_score(data, tmp_path / "cut", cfg, progress=interrupt)
    assert int(checkpoint.load(tmp_path / "cut" / "score.safetensors", "score")[0]["step"]) == 20
    train_score(data, tmp_path / "cut", cfg, resume=True)
    a, _ = checkpoint.load(tmp_path / "whole" / "score.safetensors", "score")
    b, _ = checkpoint.load(tmp_path / "cut" / "score.safetensors", "score")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_checkpoints_are_refused(gaussian_score, tmp_path):
    _, path = gaussian_score
    blob = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        LearnedScore(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="junk.safetensors"):
        LearnedScore(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="not a 'disc'"):
        checkpoint.load(path, "disc")
    data = make_target("gaussian").sample(100, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="does not match"):  # resume with another architecture
        train_score(data, path.parent, ScoreConfig(steps=10, hidden=16, depth=1), resume=True)


def test_nan_data_is_refused(tmp_path):
    bad = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [1.0, 1.0]])
    with pytest.raises(DataError, match="NaN"):
        train_score(bad, tmp_path, SMALL)
    np.save(tmp_path / "bad.npy", bad.numpy())
    r = CliRunner().invoke(app, ["train", "score", "--data", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bad.npy" in r.output and "Traceback" not in r.output


def test_embedded_data_sets():
    digits = make_data("digits")
    assert digits.shape == (1797, 64) and float(digits.min()) == -1.0 and float(digits.max()) == 1.0
    for name in ("moons", "swissroll", "circles", "ring8"):
        x = make_data(name, 500, 0)
        assert x.shape == (500, 2) and torch.equal(x, make_data(name, 500, 0))


def test_run_with_a_learned_score(gaussian_score, tmp_path):
    """The learned score drives a spec end to end, close to the exact field's result."""
    _, path = gaussian_score
    target = f"gaussian(mean = {FAMILY_MEAN.tolist()}, cov = {FAMILY_COV.tolist()})"
    args = ["run", "ve_ode", "--target", target, "--samples", "1000", "--clock", "sigma"]
    r = CliRunner().invoke(app, args + ["--fields", f'learned(score = "{path}")', "--out", str(tmp_path / "l")])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(app, args + ["--out", str(tmp_path / "e")])
    assert r2.exit_code == 0, r2.output
    learned, exact = (np.load(tmp_path / d / "samples.npy") for d in ("l", "e"))
    assert np.abs(learned.mean(0) - exact.mean(0)).max() < 0.1
    assert np.abs(np.cov(learned.T) - np.cov(exact.T)).max() < 0.15


def test_nll_with_a_learned_score(gaussian_score):
    """dfc nll works on learned fields: the VE ODE twin with the learned Gaussian score gives nearly the
    exact-field log-likelihood (the score errs by ~2%; 0.1 nats per point allows for it)."""
    from dfc.compiler import compile_spec
    from dfc.likelihood import ode_loglik
    from dfc.sample import make_run_target
    from dfc.spec import load_spec

    target, path = gaussian_score
    spec = compile_spec(load_spec("ve_ode"), None, {"target": f"gaussian(mean = {FAMILY_MEAN.tolist()}, "
                                                              f"cov = {FAMILY_COV.tolist()})"})
    exact_target = make_run_target(spec, dtype=torch.float64)
    pts = exact_target.sample(300, torch.Generator().manual_seed(3))
    exact = ode_loglik(spec, exact_target, pts).logp
    learned = ode_loglik(spec, exact_target, pts, fields=LearnedScore(path, dtype=torch.float64)).logp
    assert float((learned - exact).abs().mean()) < 0.1
