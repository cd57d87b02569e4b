"""Every preset's compiled drift and noise equal its published SDE, written out by hand (MATH §4).

The hand-written side never goes through the spec's u/σ machinery: on a Gaussian target
q = N(m, S) the forward marginal of each published SDE is Gaussian and its score is written
directly (VE: N(m, S + σ²I); VP/sub-VP: N(αm, α²S + s²I)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfc.compiler import compile_spec
from dfc.fields import Drift, GaussFit
from dfc.spec import load_spec, preset_dir
from dfc.targets import make_target

DIM = 3
RNG = np.random.default_rng(7)
MEAN = RNG.normal(size=DIM)
A = RNG.normal(size=(DIM, DIM))
COV = A @ A.T / DIM + 0.3 * np.eye(DIM)
PRESETS = sorted(p.stem for p in preset_dir().glob("*.dfs"))


def gauss_score(x, mean, cov):
    return -torch.linalg.solve(cov, (x - mean).T).T


def gauss_logpdf(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def tensors():
    return torch.tensor(MEAN), torch.tensor(COV)


def ve_sigma(name, p, t):
    if name == "ve_sde_song":
        smin, smax = p["sigma_min"], p["sigma_max"]
        s = smin * (smax / smin) ** (1 - t)
        return s, -s * math.log(smax / smin)
    a, b, rho = p["sigma_max"] ** (1 / p["rho"]), p["sigma_min"] ** (1 / p["rho"]), p["rho"]
    return (a + t * (b - a)) ** rho, rho * (a + t * (b - a)) ** (rho - 1) * (b - a)


def vp_quantities(p, t):
    """b(1−t), α(1−t) of the VP SDE (Song et al.), in generation time."""
    s = 1 - t
    b = p["beta_min"] + s * (p["beta_max"] - p["beta_min"])
    alpha = math.exp(-0.25 * s**2 * (p["beta_max"] - p["beta_min"]) - 0.5 * s * p["beta_min"])
    return b, alpha


def gan_pieces(x, mean, cov, sigma):
    """(s_Q − s_p, D) with s_p from the Gaussian fit of the batch (the `gauss` estimator)."""
    mu = x.mean(0)
    xc = x - mu
    fit = xc.T @ xc / (x.shape[0] - 1) + 1e-9 * torch.eye(DIM, dtype=x.dtype)
    q_cov = cov + sigma**2 * torch.eye(DIM, dtype=x.dtype)
    diff = gauss_score(x, mean, q_cov) - gauss_score(x, mu, fit)
    d_real = torch.sigmoid(gauss_logpdf(x, mean, q_cov) - gauss_logpdf(x, mu, fit))[:, None]
    return diff, d_real


def by_hand(name, p, x, t):
    """(drift, noise) of the published SDE of preset `name` at (x, t)."""
    mean, cov = tensors()
    eye = torch.eye(DIM, dtype=x.dtype)
    if name in ("ve_sde", "ve_ode", "ve_sde_song", "slcd", "diffusion_gan", "diffusion_gan_fast",
                "diffusion_gan_gauss", "ve_sde_mild", "analytic_continuation"):
        sigma, dsigma = ve_sigma(name, p, t)
        s_q = gauss_score(x, mean, cov + sigma**2 * eye)
        r = -2 * sigma * dsigma  # VE: noise removal rate −dσ²/dt
        if name == "ve_ode":
            return -sigma * dsigma * s_q, 0.0  # probability-flow ODE
        if name in ("ve_sde", "ve_sde_song"):
            return -2 * sigma * dsigma * s_q, math.sqrt(r)  # reverse VE SDE
        if name == "slcd":  # eta = 3: ½(1+η) r s_Q, noise sqrt(η r)
            return 2 * r * s_q, math.sqrt(3 * r)
        if name == "ve_sde_mild":  # eta = 0.1
            return 0.55 * r * s_q, math.sqrt(0.1 * r)
        diff, _ = gan_pieces(x, mean, cov, sigma)
        drift = r * s_q + p["kappa"] * r * diff  # eq. 30: reverse SDE + κ r (s_Q − s_p)
        if name in ("diffusion_gan", "diffusion_gan_fast", "diffusion_gan_gauss"):
            return drift, math.sqrt(r)
        return drift, math.sqrt(2 * r + p["c"] * r)  # λ² = −c r: noise sqrt(g² + |λ²|)
    if name in ("vp_sde", "vp_ode", "subvp_sde", "subvp_ode"):
        b, alpha = vp_quantities(p, t)
        if name.startswith("vp"):
            std2, rate = 1 - alpha**2, b
        else:
            std2, rate = (1 - alpha**2) ** 2, b * (1 - alpha**4)
        s = gauss_score(x, alpha * mean, alpha**2 * cov + std2 * eye)  # forward marginal's score
        if name.endswith("sde"):
            return 0.5 * b * x + rate * s, math.sqrt(rate)
        return 0.5 * b * x + 0.5 * rate * s, 0.0
    if name == "langevin":
        return gauss_score(x, mean, cov + p["sigma0"] ** 2 * eye), math.sqrt(2)
    if name in ("vanilla_gan", "ns_gan", "diffflow_gan"):
        sigma = p["sigma0"] if name != "diffflow_gan" else p["sigma_max"] * (p["sigma_min"] / p["sigma_max"]) ** (t / 10)
        diff, d_real = gan_pieces(x, mean, cov, sigma)
        weight = {"vanilla_gan": d_real, "ns_gan": 1 - d_real, "diffflow_gan": 1.0}[name]
        return weight * diff, 0.0
    raise AssertionError(f"no hand-written SDE for preset {name}")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_matches_published_sde(name):
    spec = compile_spec(load_spec(preset_dir() / f"{name}.dfs"))
    estimator = GaussFit() if spec.has_gan_part else None
    target = make_target("gaussian", {"mean": MEAN.tolist(), "cov": COV.tolist()}).to(dtype=torch.float64)
    drift = Drift(spec, target, estimator)
    params = {str(k): v for k, v in spec.params.items()}
    gen = torch.Generator().manual_seed(1)
    t0, t1 = spec.run.time
    for t in np.linspace(t0, t1, 7)[1:-1].tolist() + [t0 + 0.37 * (t1 - t0)]:
        x = torch.randn(64, DIM, generator=gen, dtype=torch.float64) * 2 + 0.5
        want_drift, want_noise = by_hand(name, params, x, t)
        got = drift(x, t)
        assert torch.allclose(got, want_drift, rtol=1e-7, atol=1e-9 * float(want_drift.abs().max() + 1)), \
            f"{name}: drift differs at t = {t}"
        assert drift.noise(t) == pytest.approx(want_noise, rel=1e-9, abs=1e-12), f"{name}: noise differs at t = {t}"


def test_every_row_of_the_table_is_a_preset():
    assert set(PRESETS) >= {"langevin", "ve_sde", "ve_sde_song", "vp_sde", "subvp_sde", "ve_ode", "vp_ode",
                            "subvp_ode", "vanilla_gan", "ns_gan", "diffflow_gan", "slcd", "analytic_continuation",
                            "diffusion_gan"}


def test_analytic_continuation_has_negative_lambda2():
    spec = compile_spec(load_spec(preset_dir() / "analytic_continuation.dfs"))
    assert spec.at("lambda2", 0.5) < 0
