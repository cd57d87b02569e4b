"""diffusers' multistep schedulers as peers (dfc.peers_diffusers): each checked on a Gaussian target
against the closed-form flow before it enters a table; their NFE rule; DEIS against dfc's deis_2m and
deis_3m sample for sample; skipped when diffusers (or k-diffusion) is absent, the other library's peers
still running."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import dfc.bench as b
import dfc.peers as peers
from dfc.cli import app
from dfc.compiler import compile_spec
from dfc.grids import sigma_to_t
from dfc.peers import PEERS, RHO, SIGMA_MAX, SIGMA_MIN, run_peer, steps_for
from dfc.peers_diffusers import SCHEDULERS, diffusers_module, make_scheduler, sample
from dfc.solvers import Grid, Terms, solve_run
from dfc.spec import load_spec, preset_dir
from dfc.targets import make_target

DIFFUSERS_PEERS = list(SCHEDULERS)
needs_diffusers = pytest.mark.skipif(diffusers_module() is None,
                                     reason="diffusers is not installed (pip install -e '.[peers]'): its peers are "
                                            "not checked")


def closed_form(target, x):
    """The probability-flow ODE of q_σ = N(μ, Σ + σ² I) from σ_max to 0, on the initial points x:
    μ + Σ^{1/2} (Σ + σ_max² I)^{-1/2} (x − μ) (Σ's eigenbasis diagonalises both)."""
    mean, cov = (v.double() for v in target.gaussian)
    lam, u = torch.linalg.eigh(cov)
    return mean + ((x.double() - mean) @ u) * torch.sqrt(lam / (lam + SIGMA_MAX ** 2)) @ u.T


def flow_error(name: str, nfe: int, n: int = 200, seed: int = 3) -> tuple[float, int]:
    """The largest distance between peer `name`'s samples at `nfe` and the closed-form map of the
    same prior draws (σ_max · N(0, I) from `seed`) on gauss16 (eigenvalues 0.1 … 10), in the
    bench's float32; and the NFE the peer spent."""
    target = make_target("gauss16").to(dtype=torch.float32)
    x, cost = run_peer(name, target, n, nfe, seed)
    prior = torch.randn((n, target.dim), generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX
    return float((x.double() - closed_form(target, prior)).norm(dim=1).max()), cost["nfe"]


def test_names_and_library():
    assert set(DIFFUSERS_PEERS) == {"unipc_3m", "dpmsolver_3m", "deis_3m"}
    assert all(PEERS[p].library == "diffusers" for p in DIFFUSERS_PEERS)
    assert all(PEERS[p].library == "k-diffusion" for p in PEERS if p not in SCHEDULERS)
    assert b.display_label("unipc_3m", "peer") == "unipc_3m (diffusers)"
    assert b.display_label("dpmpp_2m", "peer") == "dpmpp_2m (k-diffusion)"
    assert b.display_label("ve_ode", "spec") == "ve_ode"


@needs_diffusers
@pytest.mark.parametrize("name", DIFFUSERS_PEERS)
def test_peer_follows_the_closed_form_flow_on_a_gaussian(name):
    """At 32 NFE the samples are the closed-form map of their prior draws to 0.5% of the data's
    spread (|x − μ| ≈ 5.6); from 8 to 32 NFE the error falls by more than 4^1.5 = 8 (order > 1.5;
    a first-order method gives 4): a wrong VP/VE scaling or model output breaks both."""
    coarse, nfe8 = flow_error(name, 8)
    fine, nfe32 = flow_error(name, 32)
    assert (nfe8, nfe32) == (8, 32)
    assert fine < 0.03, (name, fine)
    assert coarse / fine > 8, (name, coarse, fine)


@needs_diffusers
@pytest.mark.parametrize("name", DIFFUSERS_PEERS)
def test_nfe_rule_is_the_counted_calls(name):
    target = make_target("ring8").to(dtype=torch.float32)
    for budget in (1, 2, 3, 4, 7, 16):
        x, cost = run_peer(name, target, 20, budget, 0)
        assert cost["nfe"] == PEERS[name].cost(steps_for(name, budget)) == budget, (name, budget, cost)
        assert x.shape == (20, 2) and torch.isfinite(x).all()
        again, _ = run_peer(name, target, 20, budget, 0)
        assert torch.equal(x, again)


@needs_diffusers
def test_dpmsolver_3m_is_kdiffusions_3m_with_eta_0():
    """From 15 steps on (diffusers lowers the order of the last two steps below 15), diffusers'
    EDM DPM-Solver++(3M) driven through dfc's conversions is k-diffusion's `sample_dpmpp_3m_sde`
    with eta = 0, sample for sample: the EDM preconditioning is inverted exactly."""
    kd = peers.kdiffusion_sampling()
    if kd is None:
        pytest.skip("k-diffusion is not installed: no parity check")
    target = make_target("gauss16").to(dtype=torch.float32)
    ours, _ = run_peer("dpmsolver_3m", target, 300, 16, 5)
    sigmas = kd.get_sigmas_karras(16, peers.SIGMA_MIN, SIGMA_MAX, peers.RHO).to(torch.float32)
    x = torch.randn((300, target.dim), generator=torch.Generator().manual_seed(5)) * SIGMA_MAX
    theirs = kd.sample_dpmpp_3m_sde(lambda y, s: y + float(s[0]) ** 2 * target.score(y, float(s[0])), x, sigmas,
                                    eta=0.0, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-4)  # float32: 1e-4 measured


def deis_pair(order: int, steps: int, float64: bool = False, lower_order_final: bool = False, n: int = 200):
    """dfc's deis_{order}m on ve_ode in the σ clock and diffusers' DEISMultistepScheduler (the deis_3m
    peer's, at `order`) on diffusers' Karras grid of `steps` steps, from the same x0 (float64) with the
    same exact denoiser on gauss16 (eigenvalues 0.1 … 10); both end with D(x; σ_min) (dfc's `denoise`,
    the peer's last evaluation). `float64`: diffusers gets its own σ grid back in float64 (see below)."""
    scheduler = make_scheduler("deis_3m", steps + 1, SIGMA_MIN, SIGMA_MAX, RHO,
                               solver_order=order, lower_order_final=lower_order_final)
    if float64:  # each step reads its σ from `scheduler.sigmas`: the same values in float64 keep it in float64
        scheduler.sigmas = scheduler.sigmas.double()
    sigmas = scheduler.sigmas.double().numpy()[:-1]  # σ_0 … σ_steps (diffusers then repeats σ_min, not stepped)
    # The same grid in dfc: the times at which a ve_ode whose σ runs between diffusers' ends (80.00003 and
    # 0.0019984, from its float32 ᾱ table) takes those σ. In the σ clock the method sees the σ values only.
    spec = compile_spec(load_spec(preset_dir() / "ve_ode.dfs"),
                        {"sigma_max": repr(float(sigmas[0])), "sigma_min": repr(float(sigmas[-1]))},
                        {"target": "gauss16", "solver": f"deis_{order}m", "clock": "sigma"})
    ts = sigma_to_t(spec, sigmas)
    np.testing.assert_allclose(spec.on_grid("sigma", ts), sigmas, rtol=1e-13, atol=0)
    target = make_target("gauss16").to(dtype=torch.float64)
    x0 = torch.randn((n, target.dim), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * sigmas[0]
    terms = Terms.of(spec, target)
    ours = terms.drift.denoise(solve_run(spec, terms, x0.clone(), Grid.of(spec, ts)), float(ts[-1]))
    theirs = sample(scheduler, lambda x, s: x + s * s * target.score(x, s), x0.clone())
    return ours, theirs


def relative_gap(pair) -> float:
    ours, theirs = pair
    return float((ours - theirs).abs().max() / theirs.abs().max())


@needs_diffusers
@pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")  # NumPy 2 on its 0-d tensors, as in run_peer
@pytest.mark.parametrize("steps", [3, 7])
@pytest.mark.parametrize("order", [2, 3])
def test_deis_is_diffusers_deis_multistep(order, steps):
    """MATH §12: on ve_ode in the σ clock, dfc's deis_{order}m is diffusers' DEISMultistepScheduler (log-ρ
    DEIS, order kept to the end: lower_order_final=False) sample for sample, start-up steps included
    (first order, then second): same grid, same x0, same exact denoiser. dfc's weights are Gauss–Legendre
    quadratures of the Lagrange basis in log σ; diffusers' are its closed-form antiderivatives (`ind_fn`).

    diffusers computes in float32 where the caller does not choose: its ᾱ table (`trained_betas` become
    a float32 tensor in `__init__`), its σ grid (`set_timesteps` casts it with `astype(np.float32)`)
    and, from those σ, each step's α, σ, ρ and coefficients (`multistep_deis_*_order_update`); the
    samples stay float64, being only scaled by those scalars. So two checks:
    - as diffusers runs, to 1e-5 of the samples' scale (float32 coefficients, their rounding amplified
      by the cancellation in ind_fn(ρ_t) − ind_fn(ρ_s0): 7e-8 … 2e-6 measured);
    - with its σ grid handed back in float64 (same values), to 1e-12 (under 1e-14 measured).
    Each step's oldest weight off by a factor 1 + 1e-4 moves the samples by 8e-5 … 1e-3 of their scale,
    interpolating in σ rather than log σ by 0.1 … 0.25: both fail the first check; 4 quadrature nodes
    in place of 64 (1e-11 … 2e-8) fail the second.
    """
    assert relative_gap(deis_pair(order, steps)) < 1e-5
    assert relative_gap(deis_pair(order, steps, float64=True)) < 1e-12
    if order == 3:  # diffusers' default (below 15 steps its last step is second order) is another method:
        # the benchmark's gap at 4-8 NFE, far outside the float32 tolerance (2e-3 … 8e-2 measured)
        assert relative_gap(deis_pair(order, steps, lower_order_final=True)) > 1e-4


def test_suite_validation_and_skips_with_one_library_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(b, "RESULTS", tmp_path)
    b.check_suite({"name": "t", "specs": ["ve_ode"], "targets": ["ring8"], "nfe": [4], "seeds": [0], "samples": 10,
                   "peers": ["euler", "unipc_3m"], "nll_targets": [], "nll_points": 0})  # known names either way
    monkeypatch.setattr(peers.peers_diffusers, "diffusers_module", lambda: None)
    assert not b.peers_available(["unipc_3m"]) and not b.peers_available()
    assert b.peers_available(["euler"]) == (peers.kdiffusion_sampling() is not None)
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100"])
    assert r.exit_code == 0, r.output
    assert "diffusers is not installed: its peer rows are skipped" in r.output and "unipc_3m" not in r.output
    assert ("dpmpp_2m" in r.output) == (peers.kdiffusion_sampling() is not None)  # k-diffusion's rows still run


@needs_diffusers
def test_diffusers_peers_run_without_kdiffusion(tmp_path, monkeypatch):
    monkeypatch.setattr(b, "RESULTS", tmp_path)
    monkeypatch.setattr(peers, "kdiffusion_sampling", lambda: None)
    assert b.peers_available(DIFFUSERS_PEERS) and not b.peers_available(["euler"])
    r = CliRunner().invoke(app, ["bench", "ve_ode", "--nfe", "4", "--samples", "100"])
    assert r.exit_code == 0, r.output
    assert "k-diffusion is not installed: its peer rows are skipped" in r.output
    assert all(p in r.output for p in DIFFUSERS_PEERS) and "dpmpp_2m" not in r.output
    records = b.frame(pd.read_csv(tmp_path / "ve_ode-bench" / "results.csv").to_dict("records"))
    peer_rows = records[records["kind"] == "peer"]
    assert set(peer_rows["label"]) == set(DIFFUSERS_PEERS) and (peer_rows["nfe"] == 4).all()
    assert peer_rows["error"].isna().all() and math.isfinite(peer_rows["sliced_w2"].max())
