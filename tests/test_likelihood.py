"""Likelihood (MATH §3, §6, §7): the flow-ODE twin's exact NLL and the SDE's ELBO."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfc.cli import app
from dfc.compiler import compile_spec
from dfc.errors import NumericalError
from dfc.likelihood import ode_loglik, sde_elbo, sp_source
from dfc.moments import GaussianMarginals
from dfc.sample import make_run_target, prior_moments
from dfc.spec import load_spec
from dfc.targets import make_target

from conftest import FAMILY, FAMILY_COV as COV, FAMILY_MEAN as MEAN


def family_case(gmul):
    spec = compile_spec(load_spec(FAMILY), {"gmul": str(gmul)}, {"fields": "exact + closed"})
    target = make_run_target(spec, dtype=torch.float64)
    marg = GaussianMarginals(spec, MEAN, COV, *prior_moments(spec, target))
    mu, cov = marg(spec.t1)
    pts = torch.tensor(np.random.default_rng(0).multivariate_normal(mu, cov, size=1500))
    exact = torch.distributions.MultivariateNormal(torch.tensor(mu), torch.tensor(cov)).log_prob(pts)
    return spec, target, pts, exact


def test_ode_twin_nll_is_the_closed_form_for_every_g():
    """p_T = N(μ_T, Σ_T) from MATH §6; the twin of each spec of the class gives that log-density."""
    results = []
    for gmul in (1, 3, 8):
        spec, target, pts, exact = family_case(gmul)
        r = ode_loglik(spec, target, pts, rtol=1e-6, atol=1e-6, source=sp_source(spec, target))
        assert float((r.logp - exact).abs().max()) < 5e-3, gmul
        results.append(r.logp)
    assert torch.allclose(results[0], results[1], atol=1e-6) and torch.allclose(results[0], results[2], atol=1e-6)


def test_elbo_with_exact_sp_is_the_likelihood_and_other_drifts_are_lower():
    spec, target, pts, exact = family_case(3)
    src = sp_source(spec, target)
    gaps = {}
    for scale in (1.0, 0.0, 2.0):
        e = sde_elbo(spec, target, pts, steps=100, scale=scale, source=src)
        d = e.logp - exact
        gaps[scale] = (float(d.mean()), float(d.std() / math.sqrt(d.shape[0])))
    mean, se = gaps[1.0]
    assert abs(mean) < 4 * se + 0.02  # equality for the exact time reversal, within Monte Carlo error
    for scale in (0.0, 2.0):
        other, other_se = gaps[scale]
        assert other < mean - 4 * (se + other_se), (scale, gaps)


def test_elbo_without_noise_is_the_ode_result():
    spec, target, pts, exact = family_case(1)  # g² = λ²: the spec is its own flow twin
    src = sp_source(spec, target)
    e = sde_elbo(spec, target, pts, steps=100, source=src)
    r = ode_loglik(spec, target, pts, source=src)
    assert float((e.logp - r.logp).abs().max()) < 1e-3


def test_hutchinson_agrees_with_exact_divergence_within_its_standard_error():
    spec = compile_spec(load_spec("ve_ode"), None, {"target": "ring8"})
    target = make_run_target(spec, dtype=torch.float64)
    pts = target.sample(400, torch.Generator().manual_seed(0))
    exact = ode_loglik(spec, target, pts, method="exact").logp
    hutch = ode_loglik(spec, target, pts, method="hutchinson", seed=3).logp
    d = hutch - exact
    se = float(d.std() / math.sqrt(d.shape[0]))
    assert se > 0  # it is an estimator: per-point values differ
    assert abs(float(d.mean())) < 4 * se


def test_ring8_ve_ode_nll_matches_the_mixture_density():
    """MATH §7 on ring8: the VE ODE twin's log p_T is the target's own log-density (σ_min = 0.002)."""
    spec = compile_spec(load_spec("ve_ode"), None, {"target": "ring8"})
    target = make_run_target(spec, dtype=torch.float64)
    pts = target.sample(300, torch.Generator().manual_seed(1))
    r = ode_loglik(spec, target, pts)
    ideal = target.log_prob(pts, spec.at("sigma", spec.t1))
    assert abs(float((r.logp - ideal).mean())) < 0.05


def test_non_finite_velocity_names_the_time(tmp_path):
    p = tmp_path / "bad.dfs"
    p.write_text('spec bad extends ve_ode "f is not defined left of x = -10"\n'
                 '  f(x, t) = 0.01*log(x + 10)\n  run target = gaussian(mean = [-30, -30], cov = [[1, 0], [0, 1]])\nend\n')
    spec = compile_spec(load_spec(p))
    target = make_run_target(spec, dtype=torch.float64)
    with pytest.raises(NumericalError) as info:
        ode_loglik(spec, target, target.sample(10, torch.Generator().manual_seed(0)))
    assert "not finite at t = " in info.value.message and "velocity" in info.value.message


def test_cli_nll_writes_record_and_plot(tmp_path):
    r = CliRunner().invoke(app, ["nll", "ve_ode", "--points", "200", "--elbo-steps", "50", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "nll.json").read_text())
    for key in ("nll", "nll_se", "bpd", "elbo", "elbo_se", "nfe", "wall_s", "target_nll"):
        assert key in rec
    assert len(rec["per_point_nll"]) == 200
    assert rec["bpd"] == pytest.approx(rec["nll"] / (2 * math.log(2)))
    assert abs(rec["nll"] - rec["target_nll"]) < 0.05
    assert (tmp_path / "nll.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_nll_scores_the_first_points_of_a_data_file(tmp_path):
    pts = make_target("ring8").sample(60, torch.Generator().manual_seed(0)).numpy()
    np.save(tmp_path / "pts.npy", pts)
    for extra, n in (([], 60), (["--points", "25"], 25)):
        out = tmp_path / f"out{n}"
        r = CliRunner().invoke(app, ["nll", "ve_ode", "--data", str(tmp_path / "pts.npy"), "--no-elbo", *extra,
                                     "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert len(json.loads((out / "nll.json").read_text())["per_point_nll"]) == n
    r = CliRunner().invoke(app, ["nll", "ve_ode", "--data", str(tmp_path / "pts.npy"), "--points", "61", "--no-elbo",
                                 "--out", str(tmp_path / "more")])  # more than the file holds: no silent 60
    assert r.exit_code == 2 and "holds 60 points" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "more").exists()


def test_cli_nll_writes_one_set_and_refuses_a_folder_of_other_files(tmp_path):
    """dfc nll replaces its output folder as a whole (a complete old or new set at every moment), so a
    folder holding other files is refused before any work, and those files are left as they were."""
    (tmp_path / "mine.txt").write_text("keep")
    r = CliRunner().invoke(app, ["nll", "ve_ode", "--points", "20", "--no-elbo", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "dfc nll did not write (mine.txt)" in r.output and "Traceback" not in r.output
    assert (tmp_path / "mine.txt").read_text() == "keep" and not (tmp_path / "nll.json").exists()


def test_cli_nll_needs_sp_when_tracking_fails(tmp_path):
    r = CliRunner().invoke(app, ["nll", "analytic_continuation", "--fields", "exact", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "tracking condition" in r.output and "Traceback" not in r.output
