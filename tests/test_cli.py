"""The command line as a user meets it: outputs, determinism, explanations, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dfc.cli import app

runner = CliRunner()
SMALL = ["--samples", "400", "--steps", "8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_outputs_and_is_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r1 = invoke("run", "diffusion_gan", *SMALL, "--out", a)
    assert r1.exit_code == 0, r1.output
    r2 = invoke("run", "diffusion_gan", *SMALL, "--out", b)
    assert r2.exit_code == 0, r2.output
    x = np.load(a / "samples.npy")
    assert x.shape == (400, 2) and x.dtype == np.float32
    assert np.array_equal(x, np.load(b / "samples.npy"))  # same seed, same samples, bit for bit
    m = json.loads((a / "metrics.json").read_text())
    for key in ("wall_s", "nfe", "steps", "sliced_w2", "floor", "mmd", "mmd_floor"):
        assert key in m
    assert m["nfe"] == 8 and m["steps"] == 8
    assert (a / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sliced W2" in r1.output
    assert invoke("run", "diffusion_gan", *SMALL, "--seed", "1", "--out", tmp_path / "c").exit_code == 0
    assert not np.array_equal(x, np.load(tmp_path / "c" / "samples.npy"))


def test_run_options_reach_the_run(tmp_path):
    r = invoke("run", "ve_sde", "--samples", "300", "--steps", "5", "--solver", "heun", "--clock", "sigma",
               "--grid", "karras(rho = 5)", "--target", "grid25", "--set", "eta=0", "--denoise", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["run"]["solver"] == "heun" and m["run"]["clock"] == "sigma" and m["run"]["target"] == "grid25"
    assert m["run"]["grid"] == "karras(rho = 5)" and m["run"]["denoise"] is True
    assert m["params"]["eta"] == 0.0
    assert m["nfe"] == 2 * 5 + 1  # Heun: two evaluations a step, plus the final denoising step


@pytest.mark.parametrize("solver", ["euler", "milstein", "srk"])
def test_torchsde_backend_runs(tmp_path, solver):
    r = invoke("run", "vp_sde", "--samples", "200", "--steps", "6", "--backend", "torchsde", "--solver", solver,
               "--out", tmp_path)
    assert r.exit_code == 0, r.output
    x = np.load(tmp_path / "samples.npy")
    assert np.isfinite(x).all() and x.std() > 0.5  # spread toward the ring, not collapsed


def test_run_on_a_data_set(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32) * 2
    np.save(tmp_path / "data.npy", pts)
    r = invoke("run", "ve_ode", "--samples", "300", "--target", tmp_path / "data.npy", "--out", tmp_path / "o",
               "--denoise")
    assert r.exit_code == 0, r.output
    x = np.load(tmp_path / "o" / "samples.npy")
    # the ideal denoiser's ODE with a final denoising step lands on the data points
    d = np.min(np.linalg.norm(x[:, None, :] - pts[None], axis=-1), axis=1)
    assert np.median(d) < 0.05


def test_a_relative_data_path_is_read_where_it_was_written(tmp_path, monkeypatch):
    """`--target rel.npy` on the command line is the current folder's file (not one beside the preset);
    `target = "rel.npy"` in a spec's run block is the file beside that spec, wherever dfc runs."""
    near, far = tmp_path / "here", tmp_path / "specs"
    near.mkdir(), far.mkdir()
    np.save(near / "rel.npy", np.full((40, 2), 3.0, dtype=np.float32))
    np.save(far / "rel.npy", np.full((40, 2), -3.0, dtype=np.float32))
    (far / "mine.dfs").write_text('spec mine extends ve_ode "on the file beside me"\n'
                                  '  run target = "rel.npy"\nend\n')
    monkeypatch.chdir(near)
    for args, centre in ((["ve_ode", "--target", "rel.npy"], 3.0), ([str(far / "mine.dfs")], -3.0)):
        r = invoke("run", *args, "--samples", "200", "--steps", "8", "--denoise", "--out", tmp_path / "o")
        assert r.exit_code == 0, r.output
        assert np.allclose(np.load(tmp_path / "o" / "samples.npy").mean(axis=0), centre, atol=0.05), args


@pytest.mark.parametrize("content,words", [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.arange(5.0), "2-D"),
])
def test_bad_data_is_refused_without_traceback(tmp_path, content, words):
    np.save(tmp_path / "bad.npy", content)
    r = invoke("run", "ve_ode", "--target", tmp_path / "bad.npy", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" not in r.output and "bad.npy" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_corrupt_npy_is_refused(tmp_path):
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY garbage")
    r = invoke("run", "ve_ode", "--target", tmp_path / "c.npy", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" not in r.output and "c.npy" in r.output, r.output


def test_check_explains_and_compares(tmp_path):
    r = invoke("check", "diffusion_gan")
    assert r.exit_code == 0, r.output
    assert "kappa*r(t)" in r.output and "tracking condition holds" in r.output and "\\begin{aligned}" in r.output
    r = invoke("check", "analytic_continuation", "--no-latex")
    assert "fails" in r.output and "relies on its GAN part" in r.output
    assert "(ratio 1.75)" in " ".join(r.output.split())  # its end law on N(0, 1), MATH §6: biased at every N
    words = " ".join(invoke("check", "diffflow_gan", "--no-latex").output.split())
    assert "W2 to Q_T = 0.000993" in words and "between modes" in words  # Gaussian end law fine, modes are not
    assert "between modes" not in " ".join(invoke("check", "diffusion_gan", "--no-latex").output.split())
    (tmp_path / "more_g.dfs").write_text('spec more_g extends ve_sde "same class, more noise"\n'
                                         '  beta(t) = r(t)\n  g2(t) = 5*r(t)\nend\n')
    r = invoke("check", "ve_sde", tmp_path / "more_g.dfs", "--no-latex")
    assert "share a marginal class" in r.output, r.output
    r = invoke("check", "ve_sde", "ve_ode", "--no-latex")
    assert "different marginal classes" in r.output and "beta differs" in r.output
    assert "stay on the same Q_t" in " ".join(r.output.split())  # both track the same path (MATH §3)
    for other in ("vp_sde", "analytic_continuation"):  # another σ, u; no tracking: no such sentence
        r = invoke("check", "ve_sde", other, "--no-latex")
        assert "different marginal classes" in r.output and "same Q_t" not in " ".join(r.output.split()), other


def test_a_run_far_from_its_target_gets_a_note(tmp_path):
    """ve_sde with stochastic Heun at 8 steps finishes (no blow-up) with sliced W2 ~6× its floor; Euler does not."""
    from dfc.cli import FAR, _far_from_target

    assert _far_from_target({"sliced_w2": FAR * 0.1 + 1e-9, "floor": 0.1}) is not None
    assert _far_from_target({"sliced_w2": FAR * 0.1 - 1e-9, "floor": 0.1}) is None
    assert _far_from_target({"floor": 0.1}) is None  # --metrics none
    far = invoke("run", "ve_sde", "--solver", "heun", "--steps", "8", "--samples", "1000", "--out", tmp_path / "h")
    near = invoke("run", "ve_sde", "--steps", "8", "--samples", "1000", "--out", tmp_path / "e")
    assert far.exit_code == near.exit_code == 0
    assert "far from the target" in far.output and "far from the target" not in near.output


def test_fmt_round_trip(tmp_path):
    r = invoke("fmt", "diffusion_gan", "--to", "yaml", "--out", tmp_path / "d.yaml")
    assert r.exit_code == 0, r.output
    r = invoke("run", tmp_path / "d.yaml", *SMALL, "--out", tmp_path / "y")
    r2 = invoke("run", "diffusion_gan", *SMALL, "--out", tmp_path / "d")
    assert r.exit_code == 0 and r2.exit_code == 0
    assert np.array_equal(np.load(tmp_path / "y" / "samples.npy"), np.load(tmp_path / "d" / "samples.npy"))


def test_unknown_spec_and_option():
    r = invoke("run", "no_such_spec")
    assert r.exit_code == 2 and "no spec named" in r.output and "Traceback" not in r.output
    r = invoke("run", "ve_sde", "--run", "colour=blue")
    assert r.exit_code == 2 and "unknown run setting" in r.output
