"""Likelihood for every spectrum point (MATH §3 flow-ODE twin, §7).

Exact: the flow-ODE twin `v = f + β (s_Q − s_p) + ½λ² s_p` (g² := λ², same marginals) carries
p_0 to p_T, so along its path from x_0 to x_T

    log p_T(x_T) = log p_0(x_0) − ∫ ∇·v(x_t, t) dt,

integrated backward from each data point with an adaptive solver (torchdiffeq's dopri5), the
divergence exact (autograd, small D) or by Hutchinson's estimator (Rademacher, seeded).

ELBO of the SDE itself: the inference process Y_r from the data point with drift
`−μ + ν a` and noise ν = sqrt(g² − λ²), and

    log p_T(x) ≥ E[ log p_0(Y_T) − ∫ (∇·μ + ½‖a‖²) dr ],

with equality for a = ν s_p (the exact time reversal); `scale` studies a = scale · ν s_p.

Where the drift needs s_p (the GAN part, or λ² ≠ g²), it comes from one of:
- the closed form of MATH §6 (`fields = exact + closed`, Gaussian spec and target);
- a population estimate (`exact + kde | gauss`) over particles from a forward simulation of the
  flow twin, stored at every grid time and interpolated, which the backward pass reuses;
- the tracking condition: a spec that meets it (MATH §3) and starts at (about) Q_0 has
  s_p = s_Q, used when no estimate is asked for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from dfc.compiler import CompiledSpec
from dfc.errors import ConfigError, NumericalError
from dfc.fields import Coeffs, Drift, make_estimator, score_q

EXACT_DIVERGENCE_MAX_DIM = 8  # above this, `auto` uses Hutchinson's estimator
BATCH = 1024  # data points integrated together


# ---------------------------------------------------------------------------------------
# Where s_p comes from


class TrackingSp:
    """s_p = s_Q: exact when the spec meets the tracking condition and p_0 = Q_0 (MATH §3)."""

    name = "tracking (s_p = s_Q)"

    def __init__(self, target):
        self.target = target

    def __call__(self, y, t, c: Coeffs, need_logp: bool):
        s, logq = score_q(self.target, y, c, 0.0, need_logp)
        return s, logq, 0.0


class PopulationSp:
    """A population estimate over stored particles (or the closed form, which needs none)."""

    def __init__(self, estimator, path: "PopulationPath | None"):
        self.estimator, self.path = estimator, path
        self.name = estimator.name + (" over a forward simulation" if path is not None else "")

    def __call__(self, y, t, c: Coeffs, need_logp: bool):
        pop = self.path(t, y.dtype) if self.path is not None else None
        return self.estimator.query(y, pop, t, need_logp)


class PopulationPath:
    """Particles of a forward simulation at each grid time, linearly interpolated in between."""

    def __init__(self, ts: np.ndarray, states: list[torch.Tensor]):
        self.ts, self.states = np.asarray(ts), states

    def __call__(self, t: float, dtype=torch.float64) -> torch.Tensor:
        ts = self.ts
        t = min(max(t, ts[0]), ts[-1])
        i = int(np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2))
        w = (t - ts[i]) / (ts[i + 1] - ts[i])
        return (self.states[i] * (1 - w) + self.states[i + 1] * w).to(dtype)


# ---------------------------------------------------------------------------------------
# The drift at arbitrary query points


def query_drift(spec: CompiledSpec, target, source=None, need_sp: bool = False) -> Drift:
    """The spec's drift at query points (differentiable), with s_p from `source` (see sp_source)."""
    sp = TrackingSp(target) if source == "tracking" else source
    if (spec.has_gan_part or need_sp) and sp is None:
        raise ConfigError(f"spec {spec.name!r} needs s_p here and no source of it was given.", None,
                          "Add a population estimate: --fields 'exact + kde' (or exact + closed on Gaussians).")
    return Drift(spec, target, sp=sp)


def s_p_at(drift: Drift, y: torch.Tensor, t: float) -> torch.Tensor:
    return drift.sp(y, t, drift.coeffs(t), False)[0]


def needs_sp(spec: CompiledSpec) -> bool:
    """Whether the flow twin or the ELBO of `spec` uses s_p (a GAN part, or noise in the reversal)."""
    return spec.has_gan_part or spec.flow_twin().has_gan_part or spec.exprs["noise2"] != 0


def sp_source(spec: CompiledSpec, target, *, forward_particles: int = 2000, seed: int = 0,
              prefer_estimate: bool = False):
    """Choose where s_p comes from (module docstring), running the forward simulation if needed.

    A spec that meets the tracking condition gets the exact s_p = s_Q, unless `prefer_estimate`
    asks for its run's population estimate (which is noisy: its error is multiplied by the GAN
    weight, ~10⁴ at σ = 80 on the EDM schedule); the closed form is exact and always taken.
    """
    if not needs_sp(spec):
        return None
    from dfc.explain import tracking
    from dfc.sample import prior_moments

    name = spec.run.estimator
    if name != "closed" and not prefer_estimate and tracking(spec).holds:
        return "tracking"  # (with learned fields, s_p = the learned s_Q: the bound then holds for that model)
    if name is None:
        raise ConfigError(f"spec {spec.name!r} needs s_p for its likelihood and does not meet the tracking "
                          f"condition (MATH §3).", spec.run.spans.get("fields"),
                          "Add a population estimate: --fields 'exact + kde' (or exact + closed on Gaussians).")
    estimator = make_estimator(spec, target, prior_moments(spec, target) if name == "closed" else None)
    if name == "closed":
        return PopulationSp(estimator, None)
    return PopulationSp(estimator, forward_population(spec.flow_twin(), target, estimator, forward_particles, seed))


POPULATION_STEPS = 256  # grid of the forward simulation that supplies populations (finer than a run's)


def forward_population(twin: CompiledSpec, target, estimator, n: int, seed: int,
                       steps: int = POPULATION_STEPS) -> PopulationPath:
    """Simulate the flow twin forward from the prior and keep the particles at every grid time.

    The grid is the run's (its clock and kind) with at least `steps` steps: the population must
    follow p_t closely, because where the GAN weight is large (r ~ 10⁴ at σ = 80) a population
    that is slightly off p_t moves the twin's velocity, and its divergence, a lot.
    """
    from dataclasses import replace

    from dfc.sample import generator_for, sample_prior
    from dfc.solvers import Grid, Terms, solve

    twin = CompiledSpec(twin.ir, twin.params, replace(twin.run, steps=max(steps, twin.run.steps)), twin.exprs)
    gen = generator_for(twin.run.device, seed)
    target = target.to(dtype=torch.float32)  # a population is a sample: float32 is ample, and 4x faster
    x0 = sample_prior(twin, target, n, gen)
    grid = Grid.of(twin)
    states: list[torch.Tensor] = [None] * len(grid.ts)

    def keep(i, x):
        states[i] = x

    with torch.no_grad():
        solve(Terms(Drift(twin, target, estimator)), "euler", x0, grid, generator=gen, record=keep)
    return PopulationPath(grid.ts, states)


# ---------------------------------------------------------------------------------------
# Divergence


def divergence(fn, y: torch.Tensor, t: float, method: str, probes: torch.Tensor | None = None):
    """(fn(y), ∇·fn(y)) per point: exact with one backward pass per dimension, or Hutchinson's
    estimator εᵀ (∂fn/∂y) ε averaged over the given Rademacher probes (K, N, D)."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        v = fn(y, t)
        if method == "exact":
            div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
            for i in range(y.shape[1]):
                (g,) = torch.autograd.grad(v[:, i].sum(), y, retain_graph=i < y.shape[1] - 1)
                div = div + g[:, i]
        else:
            div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
            for k in range(probes.shape[0]):
                (g,) = torch.autograd.grad(v, y, probes[k], retain_graph=k < probes.shape[0] - 1)
                div = div + (g * probes[k]).sum(1)
            div = div / probes.shape[0]
    return v.detach(), div.detach()


def divergence_method(method: str, dim: int) -> str:
    if method == "auto":
        return "exact" if dim <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson"
    if method not in ("exact", "hutchinson"):
        raise ConfigError(f"--divergence {method!r}: choose auto, exact or hutchinson.")
    return method


def rademacher(shape, seed: int, dtype, device) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(dtype=dtype, device=device)


def log_prior(spec: CompiledSpec, target, x: torch.Tensor) -> torch.Tensor:
    """log p_0(x): the isotropic normal prior, or Q_{t0} for `prior target`."""
    d = x.shape[1]
    prior = spec.ir.prior
    if prior.kind == "normal":
        kw = {k: float(v.xreplace(spec.params)) for k, v in prior.kwargs}
        z = (x - kw["mean"]) / kw["scale"]
        return -0.5 * (z * z).sum(1) - d * math.log(kw["scale"]) - 0.5 * d * math.log(2 * math.pi)
    u0, s0 = spec.at("u", spec.t0), spec.at("sigma", spec.t0)
    return target.log_prob(x * u0, s0) + d * math.log(u0)


# ---------------------------------------------------------------------------------------
# Exact log-likelihood through the flow-ODE twin


@dataclass
class LikelihoodResult:
    logp: torch.Tensor  # per point
    nfe: int
    wall_s: float
    divergence: str
    sp: str


def ode_loglik(spec: CompiledSpec, target, points: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-5,
               method: str = "auto", probes: int = 1, seed: int = 0, source=None,
               progress=None, fields=None) -> LikelihoodResult:
    """log p_T at each point, by integrating the flow twin backward from t1 to t0 (MATH §7).

    `progress(fraction)` is told how much of the work is done (batches, and time within one).
    `fields` (default: the target) is what the drift scores, e.g. a learned score."""
    from torchdiffeq import odeint

    twin = spec.flow_twin()
    field = query_drift(twin, fields if fields is not None else target, source)
    field.prepare(twin.grid())
    how = divergence_method(method, points.shape[1])
    start = time.perf_counter()
    out = []
    for b in range(0, points.shape[0], BATCH):
        x = points[b : b + BATCH]
        eps = rademacher((probes,) + tuple(x.shape), seed + b, x.dtype, x.device) if how == "hutchinson" else None

        def rhs(t, state, b=b):
            y = state[0]
            tf = float(t)
            if progress is not None:
                within = (spec.t1 - tf) / (spec.t1 - spec.t0)
                progress((b + within * x.shape[0]) / points.shape[0])
            v, div = divergence(field, y, tf, how, eps)
            if not bool(torch.isfinite(v).all()):
                raise NumericalError(f"the flow twin's velocity is not finite at t = {tf:.6g} (spec {spec.name!r}).",
                                     None, "Shorten the time interval away from a singular σ, or check the spec.")
            if not bool(torch.isfinite(div).all()):
                raise NumericalError(f"the divergence ∇·v is not finite at t = {tf:.6g} (spec {spec.name!r}).",
                                     None, "The field is singular there: shorten the time interval.")
            return v, div

        state0 = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
        span = torch.tensor([spec.t1, spec.t0], dtype=torch.float64)
        try:
            ys, deltas = odeint(rhs, state0, span, rtol=rtol, atol=atol, method="dopri5")
        except AssertionError as exc:  # torchdiffeq: step size underflow in a stiff region
            raise NumericalError(f"the adaptive ODE solver failed for spec {spec.name!r}: {exc}.", None,
                                 "The flow is stiff there: loosen --rtol/--atol or shorten the time interval.") from None
        out.append(log_prior(spec, target, ys[-1]) + deltas[-1])
    wall = time.perf_counter() - start
    sp_name = "not needed" if not twin.has_gan_part else field.sp.name
    return LikelihoodResult(torch.cat(out), field.nfe, wall, how, sp_name)


# ---------------------------------------------------------------------------------------
# ELBO of the SDE (MATH §7)


def _noise_variance(spec: CompiledSpec, ts: np.ndarray, nodes: int = 8) -> np.ndarray:
    """∫ (g² − λ²) dt over each interval of `ts` (Gauss–Legendre): the variance the additive noise
    adds over a step, exactly, however fast ν changes (ν varies over orders of magnitude on EDM's σ)."""
    from dfc.symbolic import time_values

    x, w = np.polynomial.legendre.leggauss(nodes)
    a, b = ts[:-1, None], ts[1:, None]
    mid, half = (a + b) / 2, (b - a) / 2
    vals = time_values(spec.exprs["noise2"], (mid + half * x[None, :]).ravel()).reshape(mid.shape[0], nodes)
    return np.abs((vals * w[None, :]).sum(1) * half[:, 0])


def sde_elbo(spec: CompiledSpec, target, points: torch.Tensor, *, steps: int = 200, scale: float = 1.0,
             method: str = "auto", seed: int = 0, source=None, progress=None, fields=None) -> LikelihoodResult:
    """Per-point single-path estimate of the ELBO (MATH §7).

    The inference process runs on a uniform grid in r with a stochastic Heun step (the drift
    and the integrand averaged over both ends, one Gaussian increment), so that with zero noise
    it is Heun's method on the flow and the trapezoid rule on ∫ ∇·μ: second order, like the
    adaptive exact computation it then equals.
    """
    field = query_drift(spec, fields if fields is not None else target, source, need_sp=spec.exprs["noise2"] != 0)
    how = divergence_method(method, points.shape[1])
    rs = np.linspace(0.0, spec.t1 - spec.t0, steps + 1)
    ts = spec.t1 - rs
    field.prepare(ts)
    noise_sd = np.sqrt(_noise_variance(spec, ts))  # exact ∫ ν² over each step: additive noise
    gen = torch.Generator(device=points.device).manual_seed(seed)
    start = time.perf_counter()
    out = []

    def terms(y, t, eps):
        """The inference drift −μ + ν a and the integrand ∇·μ + ½‖a‖² at (y, t)."""
        mu, div = divergence(field, y, t, how, eps)
        nu = field.noise(t)
        a = scale * nu * s_p_at(field, y, t) if nu > 0 else None
        if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(div).all())):
            raise NumericalError(f"the ELBO's drift μ or its divergence is not finite at t = {t:.6g} "
                                 f"(spec {spec.name!r}).", None, "Use more --elbo-steps or a shorter time interval.")
        if a is None:
            return -mu, div
        return a.mul(nu).sub_(mu), div + 0.5 * (a * a).sum(1)

    for b in range(0, points.shape[0], BATCH):
        y = points[b : b + BATCH].clone()
        acc = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for k in range(steps):
            t, t_next, dr = float(ts[k]), float(ts[k + 1]), float(rs[k + 1] - rs[k])
            eps = rademacher((1,) + tuple(y.shape), seed + 7919 * k + b, y.dtype, y.device) \
                if how == "hutchinson" else None
            noise = float(noise_sd[k]) * torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device) \
                if noise_sd[k] > 0 else 0.0
            v1, c1 = terms(y, t, eps)
            v2, c2 = terms(y + v1 * dr + noise, t_next, eps)
            acc += 0.5 * (c1 + c2) * dr
            y = y + 0.5 * (v1 + v2) * dr + noise
            if progress is not None:
                progress((b + (k + 1) / steps * y.shape[0]) / points.shape[0])
        out.append(log_prior(spec, target, y) - acc)
    wall = time.perf_counter() - start
    sp_name = field.sp.name if field.sp is not None else "not needed"
    return LikelihoodResult(torch.cat(out), field.nfe, wall, how, sp_name)
