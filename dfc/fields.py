"""The three fields of the drift (MATH §5) and the decomposed drift itself (MATH §2, eq. 28).

    drift(x, t) = f(x, t) + w_gan(t, D) · (s_Q^h − s_p)(x, t) + w_score(t) · s_Q(x, t)
    noise(t)    = sqrt(g² − λ²)

`s_Q(x, t) = u · ∇log q_σ(t)(u x)` is exact (the target's closed form), or a learned score wrapped
as a target (dfc.learned.LearnedScore). An estimator with a `gan_field(x, t, need_logit)` method
(dfc.learned.DiscStack, learned discriminators) gives `s_Q − s_p` and the logit directly. `s_p` is estimated
from the particle batch itself, which is why the drift sees the whole batch (mean-field):
a Gaussian fit, a KDE with bandwidth h (paired with the equally smoothed target `s_Q^h`,
σ'² = σ² + u² h², so the GAN field vanishes when p_t = Q_t), or the closed form of MATH §6.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from dfc.errors import ConfigError

from dfc.kde import CFL, KDE, stable_bandwidth  # the KDE family (exact, binned, subset): MATH §5, §10


# ---------------------------------------------------------------------------------------
# Population estimates of s_p. Each has `query(y, population, t, need_logp, h_min=0)` ->
# (s_p, log p or None, h): the score of the population's law (smoothed by h, 0 for none) at y.
# A smoothing estimate uses h ≥ h_min, the stability floor of the step it feeds (MATH §10).


class GaussFit:
    """s_p of the Gaussian fitted to the population (exact when p_t is Gaussian)."""

    name = "gauss"

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        return self.query(x, x, t, need_logp)[:2]

    def query(self, y: torch.Tensor, population: torch.Tensor, t: float, need_logp: bool, h_min: float = 0.0):
        n, d = population.shape
        mu = population.mean(0)
        pc = population - mu
        cov = pc.T @ pc / (n - 1) + 1e-9 * torch.eye(d, dtype=y.dtype, device=y.device)
        chol = torch.linalg.cholesky(cov)
        yc = y - mu
        z = torch.cholesky_solve(yc.T, chol).T  # Σ⁻¹ (y − μ)
        logp = None
        if need_logp:
            logdet = 2 * torch.log(torch.diagonal(chol)).sum()
            logp = -0.5 * (yc * z).sum(1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)
        return -z, logp, 0.0


class ClosedForm:
    """s_p of the exact Gaussian marginal N(μ_t, Σ_t) of MATH §6 (Gaussian spec and target)."""

    name = "closed"

    def __init__(self, marginals):
        self.marginals = marginals

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        return self.query(x, x, t, need_logp)[:2]

    def query(self, y: torch.Tensor, population, t: float, need_logp: bool, h_min: float = 0.0):
        mu, cov = self.marginals(t)
        mu = torch.as_tensor(mu, dtype=y.dtype, device=y.device)
        prec = torch.as_tensor(np.linalg.inv(cov), dtype=y.dtype, device=y.device)
        yc = y - mu
        z = yc @ prec
        logp = None
        if need_logp:
            d = y.shape[1]
            logdet = float(np.linalg.slogdet(cov)[1])
            logp = -0.5 * (yc * z).sum(1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)
        return -z, logp, 0.0


def make_estimator(spec, target, prior_moments=None):
    """The population estimate the run asks for; `kde` with Scott's rule if the spec needs one."""
    name = spec.run.estimator or ("kde" if spec.has_gan_part else None)
    if name is None:
        return None
    opts = dict(spec.run.estimator_options)
    if name == "kde":
        from dfc.kde import BINNED_MAX_DIM

        if opts.get("method") == "binned" and target.dim > BINNED_MAX_DIM:
            raise ConfigError(f"the binned KDE works in at most {BINNED_MAX_DIM} dimensions; the target has "
                              f"{target.dim}.", spec.run.spans.get("fields"),
                              "Use kde(method = subset) (a fixed subset of m particles) or kde(method = exact).")
        return KDE(opts.get("h"), opts.get("method", "auto"), opts.get("m"), opts.get("cfl", CFL))
    if name == "gauss":
        return GaussFit()
    if name == "disc":  # a learned stack is loaded and checked by dfc.sample.make_gan_field (sampling only)
        raise ConfigError("a discriminator stack (`+ disc(...)`) gives s_Q − s_p to a sampler, not s_p itself.",
                          spec.run.spans.get("fields"), "Use `+ kde` here, or `dfc run` to sample with the stack.")
    gauss = getattr(target, "gaussian", None)
    if gauss is None or prior_moments is None:
        raise ConfigError("the closed-form s_p (`exact + closed`) needs a Gaussian target and a normal or "
                          "target prior.", spec.run.spans.get("fields"), "Use `exact + gauss` or `exact + kde`.")
    from dfc.moments import GaussianMarginals

    m, s = (v.detach().cpu().double().numpy() for v in gauss)
    return ClosedForm(GaussianMarginals(spec, m, s, *prior_moments))


# ---------------------------------------------------------------------------------------
# The drift


@dataclass
class Coeffs:
    """Time-only scalars of the drift at one t (floats; None where a term needs x or D)."""

    sigma: float
    u: float
    w_score: float
    w_gan: float | None  # None: depends on D, computed per particle
    a: float | None  # f = a x + b; None: f is nonlinear
    b: float | None
    noise: float
    h_min: float = 0.0  # the population estimate's least bandwidth for the step using this evaluation (MATH §10)


def score_q(target, x: torch.Tensor, c: Coeffs, extra_var: float = 0.0, need_logp: bool = False):
    """s_Q = u·∇log q_σ(u x) (and log Q_t) at x (MATH §1), optionally for the target smoothed by an
    extra variance (u h)² (the KDE pairing of MATH §5)."""
    sigma = math.sqrt(c.sigma**2 + extra_var)
    if c.u == 1.0:
        if need_logp:
            return target.log_prob_and_score(x, sigma)[::-1]
        return target.score(x, sigma), None
    ux = x * c.u
    if need_logp:
        logq, s = target.log_prob_and_score(ux, sigma)
        return s * c.u, logq + x.shape[1] * math.log(c.u)
    return target.score(ux, sigma) * c.u, None


class Drift:
    """drift(x, t) and noise(t) of a compiled spec on exact fields. Counts field evaluations.

    s_p comes from `estimator` applied to the batch itself (sampling: the particles are a sample
    of p_t), or from `sp(x, t, coeffs, need_logp) -> (s_p, log p or None, h)` when given (the
    likelihood's query points are not a sample of p_t, see dfc.likelihood).
    """

    def __init__(self, spec, target, estimator=None, sp=None):
        self.spec, self.target, self.estimator = spec, target, estimator
        self.need_gan = spec.has_gan_part
        self.sp = sp if sp is not None else (self._batch_estimate if estimator is not None else None)
        if self.need_gan and self.sp is None:
            raise ConfigError(f"spec {spec.name!r} has a GAN part (β ≠ ½g²) and needs a population estimate "
                              f"of s_p.", spec.run.spans.get("fields"), "Use `fields = exact + kde`.")
        self.nfe = 0
        self.estimator_s = 0.0  # wall time spent in the population estimate of s_p (not free: KDE is O(N²))
        self._cache: dict[float, Coeffs] = {}
        lin = spec.f_linear
        self._f_zero = lin is not None and lin[0] == 0 and lin[1] == 0

    # ---- time coefficients
    def prepare(self, ts, dt=None) -> None:
        """Compute the coefficients of every t in `ts` at once (vectorised). `dt[i]`, when given, is the
        effective step a solver applies to the drift evaluated at ts[i] (MATH §9): with the GAN weight it
        bounds the population estimate's bandwidth from below (MATH §10)."""
        ts = np.asarray(ts, dtype=np.float64)
        spec = self.spec
        cols = {k: spec.on_grid(k, ts) for k in ("sigma", "u", "w_score", "noise2")}
        w_gan = None if spec.uses_D else spec.on_grid("w_gan", ts)
        a = b = None
        if spec.f_linear is not None:
            a, b = spec.on_grid("a", ts), spec.on_grid("b", ts)
        h_min = np.zeros_like(ts)
        cfl = getattr(self.estimator, "cfl", 0.0)
        if dt is not None and self.need_gan and cfl > 0:
            gan_step = spec.gan_weight_bound(ts) * np.abs(np.asarray(dt, dtype=np.float64))
            sigma_x = np.abs(cols["sigma"] / cols["u"])
            h_min = np.array([stable_bandwidth(float(a), float(s), cfl) for a, s in zip(gan_step, sigma_x)])
        for i, t in enumerate(ts):
            self._cache[float(t)] = Coeffs(
                float(cols["sigma"][i]), float(cols["u"][i]), float(cols["w_score"][i]),
                None if w_gan is None else float(w_gan[i]),
                None if a is None else float(a[i]), None if b is None else float(b[i]),
                math.sqrt(max(float(cols["noise2"][i]), 0.0)), float(h_min[i]))

    def coeffs(self, t: float) -> Coeffs:
        t = float(t)
        c = self._cache.get(t)
        if c is None:
            self.prepare([t])
            c = self._cache[t]
        return c

    def noise(self, t: float) -> float:
        return self.coeffs(t).noise

    # ---- fields
    def score_q(self, x: torch.Tensor, c: Coeffs, extra_var: float = 0.0, need_logp: bool = False):
        return score_q(self.target, x, c, extra_var, need_logp)

    def _batch_estimate(self, x: torch.Tensor, t: float, c: Coeffs, need_logp: bool):
        start = time.perf_counter()
        out = self.estimator.query(x, x, t, need_logp, c.h_min)
        self.estimator_s += time.perf_counter() - start
        return out

    def fields(self, x: torch.Tensor, t: float):
        """One field evaluation: s_Q, and (if the spec has a GAN part) s_Q^h − s_p and the logit d."""
        c = self.coeffs(t)
        self.nfe += 1
        s_q, _ = self.score_q(x, c)
        if not self.need_gan:
            return s_q, None, None
        need_logit = self.spec.uses_D
        gan_field = getattr(self.estimator, "gan_field", None)
        if gan_field is not None:  # a learned discriminator: ∇d ≈ s_Q − s_p and its logit d (MATH §1, §5)
            start = time.perf_counter()
            gan, logit = gan_field(x, t, need_logit)
            self.estimator_s += time.perf_counter() - start
            return s_q, gan, logit
        s_p, logp, h = self.sp(x, t, c, need_logit)
        if h > 0 or need_logit:
            s_qh, logq = self.score_q(x, c, (c.u * h) ** 2, need_logit)
        else:
            s_qh, logq = s_q, None
        logit = (logq - logp) if need_logit else None
        return s_q, s_qh - s_p, logit

    def _w_gan(self, c: Coeffs, t: float, logit):
        """w_gan at t: a float, or per particle (N, 1) when β depends on D = sigmoid(d)."""
        return c.w_gan if c.w_gan is not None else self.spec.fn["w_gan"](t, torch.sigmoid(logit)[:, None])

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        c = self.coeffs(t)
        s_q, gan, logit = self.fields(x, t)
        if x.requires_grad and torch.is_grad_enabled():  # differentiable (the likelihood's divergence)
            out = s_q * c.w_score
            if gan is not None:
                out = out + self._w_gan(c, t, logit) * gan
            return out + (c.a * x + c.b if c.a is not None else self.spec.fn["f"](x, t))
        out = s_q.mul_(c.w_score)  # s_q is a fresh tensor (gan, if any, was computed from it already)
        if gan is not None:
            if c.w_gan is not None:
                out.add_(gan, alpha=c.w_gan)
            else:
                out.add_(gan * self._w_gan(c, t, logit))
        if c.a is not None:
            if not self._f_zero:
                if c.a != 0.0:
                    out.add_(x, alpha=c.a)
                if c.b != 0.0:
                    out.add_(c.b)
        else:
            out.add_(self.spec.fn["f"](x, t))
        return out

    def split(self, x: torch.Tensor, t: float):
        """One field evaluation as MATH §11 splits it: Tweedie's data prediction D = u x + σ² s_Q / u and
        the rest N = b + w_gan (s_Q^h − s_p) (None when it is zero). Needs f linear in x."""
        c = self.coeffs(t)
        s_q, gan, logit = self.fields(x, t)
        rest = None if gan is None else gan * self._w_gan(c, t, logit)
        if c.b:
            rest = c.b + (0.0 if rest is None else rest)
        return s_q.mul_(c.sigma**2 / c.u).add_(x, alpha=c.u), rest

    def denoise(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Tweedie's E[Y | x_t = x] = u x + σ² s_Q / u: the final step to σ = 0 (MATH §9)."""
        c = self.coeffs(t)
        s_q, _ = self.score_q(x, c)
        self.nfe += 1
        return x * c.u + s_q * (c.sigma**2 / c.u)
