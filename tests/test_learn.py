"""Learned scores (MATH §5): DSM accuracy, embedded data, exact resume, checkpoints that refuse bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfc import checkpoint
from dfc.cli import app
from dfc.data import DIGITS_HELD_OUT, digits, law, training_data
from dfc.errors import ConfigError, DataError
from dfc.learned import LearnedScore, load_score, score_error
from dfc.train import ScoreConfig, train_score

from conftest import FAMILY_COV, FAMILY_MEAN

GAUSS = f"gaussian(mean = {FAMILY_MEAN.tolist()}, cov = {FAMILY_COV.tolist()})"
SMALL = ScoreConfig(steps=800, batch=512, hidden=64, depth=2, lr=2e-3, warmup=50, ema=0.99, save_every=10**9)
TINY = ScoreConfig(steps=40, batch=64, hidden=16, depth=1, warmup=5, save_every=20)


@pytest.fixture(scope="module")
def gaussian_score(tmp_path_factory):
    x, info = training_data(GAUSS, points=20000)
    out = tmp_path_factory.mktemp("score")
    train_score(x, info, out, SMALL)
    return law(GAUSS), out / "score.safetensors"


def test_dsm_learns_the_gaussian_score(gaussian_score):
    """Relative L2 error ‖s_θ − s‖/‖s‖ against the closed form −(S + σ²I)⁻¹(y − m) on samples of q_σ.
    It measures 0.02–0.04 here. The bound 0.1 leaves room for the Monte-Carlo noise of 800 DSM steps
    of 512 draws; an untrained network (D = c_skip z, error ~0.4 at σ = 0.5) or a wrong scaling of σ
    or of the normalisation (errors of order 1) fails it."""
    target, path = gaussian_score
    errors = score_error(load_score(path), target, sigmas=(0.5, 1.0, 2.0))
    assert all(e < 0.1 for e in errors.values()), errors


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    x, info = training_data("moons", points=2000)
    train_score(x, info, tmp_path / "whole", TINY)

    def interrupt(step, *_):
        if step == 27:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_score(x, info, tmp_path / "cut", TINY, progress=interrupt)
    _, header = checkpoint.load(tmp_path / "cut" / "score.safetensors", "score")
    assert header["progress"] == {"step": 20, "total": 40, "complete": False}
    train_score(x, info, tmp_path / "cut", TINY, resume=True)
    a, _ = checkpoint.load(tmp_path / "whole" / "score.safetensors", "score")
    b, _ = checkpoint.load(tmp_path / "cut" / "score.safetensors", "score")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _flip_last_byte(path, dst):
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x40
    dst.write_bytes(bytes(blob))
    return dst


def test_bad_checkpoints_are_refused(gaussian_score, tmp_path):
    _, path = gaussian_score
    blob = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cut.safetensors is corrupt or truncated: its tensors need"):
        load_score(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="junk.safetensors is corrupt or truncated"):
        load_score(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="do not match the checksum"):  # one flipped bit in a weight
        load_score(_flip_last_byte(path, tmp_path / "flipped.safetensors"))
    with pytest.raises(DataError, match="not a 'disc'"):
        checkpoint.load(path, "disc")
    with pytest.raises(DataError, match="no checkpoint at"):
        load_score(tmp_path / "missing.safetensors")
    np.save(tmp_path / "points.npy", np.zeros((3, 2)))  # another format is named, not called corrupt
    with pytest.raises(DataError, match="points.npy is a NumPy .npy file, not a safetensors checkpoint"):
        load_score(tmp_path / "points.npy")
    head = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.ljust(0x180)  # a 384-byte header: 0x80 first
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", len(head)) + head[:100])
    with pytest.raises(DataError, match="short.safetensors is corrupt or truncated"):  # not "a pickle"
        load_score(tmp_path / "short.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(DataError, match="model.pt is a zip archive"):
        load_score(tmp_path / "model.pt")


def test_a_checkpoint_from_a_diverged_run_is_refused(tmp_path):
    bad = {"ema.w": torch.tensor([1.0, float("nan")])}
    checkpoint.save(tmp_path / "nan.safetensors", bad, {"kind": "score"})
    with pytest.raises(DataError, match="non-finite values in tensor 'ema.w'"):
        checkpoint.load(tmp_path / "nan.safetensors", "score")


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="without a dfc header"):
        load_score(tmp_path / "other.safetensors")
    # a header from a future format
    raw = (tmp_path / "other.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head["__metadata__"] = {"dfc": json.dumps({"format": 99, "kind": "score"})}
    text = json.dumps(head).encode()
    (tmp_path / "future.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(DataError, match="format 99"):
        load_score(tmp_path / "future.safetensors")


def test_resume_with_other_settings_names_the_mismatch(tmp_path):
    x, info = training_data("moons", points=500)
    train_score(x, info, tmp_path, TINY)
    with pytest.raises(DataError, match=r"its arch .*hidden: 16 in the file, 32 now"):
        train_score(x, info, tmp_path, ScoreConfig(**{**TINY.__dict__, "hidden": 32}), resume=True)
    y, other = training_data("circles", points=500)
    with pytest.raises(DataError, match="its arch|its data"):
        train_score(y, other, tmp_path, TINY, resume=True)
    with pytest.raises(DataError, match="no checkpoint .* to continue"):
        train_score(x, info, tmp_path / "nothing", TINY, resume=True)


def test_nan_data_is_refused(tmp_path):
    bad = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [1.0, 1.0]])
    with pytest.raises(DataError, match="NaN|non-finite"):
        train_score(bad, {"name": "bad"}, tmp_path, TINY)
    np.save(tmp_path / "bad.npy", bad.numpy())
    r = CliRunner().invoke(app, ["train", "score", "--data", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bad.npy" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()  # nothing written before the error


def test_embedded_data_sets():
    train, test = digits("train"), digits("test")
    assert train.shape == (1797 - DIGITS_HELD_OUT, 64) and test.shape == (DIGITS_HELD_OUT, 64)
    assert float(torch.cat([train, test]).min()) == -1.0 and float(torch.cat([train, test]).max()) == 1.0
    all_ = digits("all")
    assert {tuple(r) for r in torch.cat([train, test]).tolist()} == {tuple(r) for r in all_.tolist()}
    for name in ("moons", "swissroll", "circles", "ring8", "grid25", "checkerboard"):
        x, info = training_data(name, points=500)
        assert x.shape == (500, 2) and torch.equal(x, training_data(name, points=500)[0])
        assert info["sha256"] == training_data(name, points=500)[1]["sha256"]
    with pytest.raises(ConfigError, match="unknown data set 'mnist'"):
        training_data("mnist")


@pytest.mark.parametrize("name", ["moons", "swissroll", "circles"])
def test_curve_laws_match_their_samples(name):
    """The quadrature mixture that gives a curve its exact score has the law its samples are drawn
    from: the mean log-density of fresh samples is the mixture's negative entropy, which a
    mismatched curve (a shift of one noise std) lowers by about ½ nat; within 0.05 nats it agrees."""
    lw = law(name).to(dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = lw.sample(20000, gen)
    means, stds, _ = lw.components()
    nodes = means[torch.randint(means.shape[0], (20000,), generator=gen)]
    on_nodes = nodes + stds.reshape(-1)[0] * torch.randn(nodes.shape, generator=gen, dtype=torch.float64)
    assert abs(float(lw.log_prob(x, 0.0).mean() - lw.log_prob(on_nodes, 0.0).mean())) < 0.05


def test_run_with_a_learned_score(gaussian_score, tmp_path):
    """The learned score drives a spec end to end, close to the exact field's result."""
    _, path = gaussian_score
    args = ["run", "ve_ode", "--target", GAUSS, "--samples", "1000", "--clock", "sigma"]
    r = CliRunner().invoke(app, args + ["--fields", f'learned(score = "{path}")', "--out", str(tmp_path / "l")])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(app, args + ["--out", str(tmp_path / "e")])
    assert r2.exit_code == 0, r2.output
    learned, exact = (np.load(tmp_path / d / "samples.npy") for d in ("l", "e"))
    assert np.abs(learned.mean(0) - exact.mean(0)).max() < 0.1
    assert np.abs(np.cov(learned.T) - np.cov(exact.T)).max() < 0.15


def test_a_learned_score_refuses_another_target(gaussian_score, tmp_path):
    _, path = gaussian_score
    r = CliRunner().invoke(app, ["run", "ve_ode", "--target", "ring8", "--fields", f'learned(score = "{path}")',
                                 "--out", str(tmp_path)])
    assert r.exit_code == 2 and "does not match this run" in r.output and "ring8" in r.output
    assert "Traceback" not in r.output


def test_nll_with_a_learned_score(gaussian_score):
    """dfc nll works on learned fields: the VE ODE twin with the learned Gaussian score gives nearly the
    exact-field log-likelihood (the score errs by a few %; 0.1 nats per point allows for it)."""
    from dfc.likelihood import ode_loglik
    from dfc.sample import build, make_run_target

    _, path = gaussian_score
    spec = build("ve_ode", None, {"target": GAUSS})
    exact_target = make_run_target(spec, dtype=torch.float64)
    pts = exact_target.sample(300, torch.Generator().manual_seed(3))
    exact = ode_loglik(spec, exact_target, pts).logp
    learned = ode_loglik(spec, exact_target, pts, fields=LearnedScore.load(path, dtype=torch.float64)).logp
    assert float((learned - exact).abs().mean()) < 0.1
