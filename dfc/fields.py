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

KDE_CHUNK = 1 << 22  # pairwise entries per chunk (memory bound for the O(N²) KDE)


# ---------------------------------------------------------------------------------------
# Population estimates of s_p


class GaussFit:
    """s_p of the Gaussian fitted to the population (exact when p_t is Gaussian)."""

    name = "gauss"

    def bandwidth(self, population: torch.Tensor) -> float:
        return 0.0

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        return self.query(x, x, t, need_logp)

    def query(self, y: torch.Tensor, population: torch.Tensor, t: float, need_logp: bool):
        """s_p (and log p) at query points y, for the law the population `population` samples."""
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
        return -z, logp


class KDE:
    """Gaussian kernel density estimate of p_t * N(0, h²I) and its score.

    h is given, or Scott's rule h = s · N^(−1/(D+4)) with s the mean per-coordinate std.
    """

    name = "kde"

    def __init__(self, h: float | None = None):
        self.h = h

    def bandwidth(self, population: torch.Tensor) -> float:
        if self.h is not None:
            return float(self.h)
        n, d = population.shape
        s = float(population.detach().std(0).mean())
        return max(s, 1e-12) * n ** (-1.0 / (d + 4))

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        return self.query(x, x, t, need_logp)

    def query(self, y: torch.Tensor, population: torch.Tensor, t: float, need_logp: bool):
        """Score (and log density) of the smoothed population law at the query points y."""
        n, d = population.shape
        h = self.bandwidth(population)
        inplace = not (torch.is_grad_enabled() and y.requires_grad)  # in-place ops save memory on the hot path
        sq_pop = (population * population).sum(1)
        sq_y = (y * y).sum(1)
        rows = max(1, KDE_CHUNK // n)
        scores, logps = [], []
        for i in range(0, y.shape[0], rows):
            yi = y[i : i + rows]
            d2 = sq_y[i : i + rows, None] + sq_pop[None, :] - 2 * yi @ population.T
            # softmax weights of the kernel, and log Σ exp for the density (one exp pass)
            if inplace:
                logits = d2.clamp_min_(0).mul_(-0.5 / h**2)
                top = logits.amax(1, keepdim=True)
                w = logits.sub_(top).exp_()
                total = w.sum(1, keepdim=True)
                w.div_(total)
            else:
                logits = d2.clamp_min(0) * (-0.5 / h**2)
                top = logits.amax(1, keepdim=True).detach()
                e = torch.exp(logits - top)
                total = e.sum(1, keepdim=True)
                w = e / total
            lse = top + torch.log(total)
            scores.append((w @ population - yi) / h**2)
            if need_logp:
                logps.append(lse[:, 0] - math.log(n) - 0.5 * d * math.log(2 * math.pi * h**2))
        return torch.cat(scores), (torch.cat(logps) if need_logp else None)


class ClosedForm:
    """s_p of the exact Gaussian marginal N(μ_t, Σ_t) of MATH §6 (Gaussian spec and target)."""

    name = "closed"

    def __init__(self, marginals):
        self.marginals = marginals

    def bandwidth(self, population: torch.Tensor) -> float:
        return 0.0

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        return self.query(x, x, t, need_logp)

    def query(self, y: torch.Tensor, population, t: float, need_logp: bool):
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
        return -z, logp


def make_estimator(spec, target, prior_moments=None):
    """The population estimate the run asks for; `kde` with Scott's rule if the spec needs one."""
    name = spec.run.estimator or ("kde" if spec.has_gan_part else None)
    if name is None:
        return None
    opts = dict(spec.run.estimator_options)
    if name == "kde":
        return KDE(opts.get("h"))
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
    def prepare(self, ts) -> None:
        """Compute the coefficients of every t in `ts` at once (vectorised)."""
        ts = np.asarray(ts, dtype=np.float64)
        spec = self.spec
        cols = {k: spec.on_grid(k, ts) for k in ("sigma", "u", "w_score", "noise2")}
        w_gan = None if spec.uses_D else spec.on_grid("w_gan", ts)
        a = b = None
        if spec.f_linear is not None:
            a, b = spec.on_grid("a", ts), spec.on_grid("b", ts)
        for i, t in enumerate(ts):
            self._cache[float(t)] = Coeffs(
                float(cols["sigma"][i]), float(cols["u"][i]), float(cols["w_score"][i]),
                None if w_gan is None else float(w_gan[i]),
                None if a is None else float(a[i]), None if b is None else float(b[i]),
                math.sqrt(max(float(cols["noise2"][i]), 0.0)))

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
        s_p, logp = self.estimator(x, t, need_logp)
        self.estimator_s += time.perf_counter() - start
        return s_p, logp, self.estimator.bandwidth(x)

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

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        c = self.coeffs(t)
        s_q, gan, logit = self.fields(x, t)
        if x.requires_grad and torch.is_grad_enabled():  # differentiable (the likelihood's divergence)
            out = s_q * c.w_score
            if gan is not None:
                w = c.w_gan if c.w_gan is not None else self.spec.fn["w_gan"](t, torch.sigmoid(logit)[:, None])
                out = out + w * gan
            return out + (c.a * x + c.b if c.a is not None else self.spec.fn["f"](x, t))
        out = s_q.mul_(c.w_score)  # s_q is a fresh tensor (gan, if any, was computed from it already)
        if gan is not None:
            if c.w_gan is not None:
                out.add_(gan, alpha=c.w_gan)
            else:
                out.add_(gan * self.spec.fn["w_gan"](t, torch.sigmoid(logit)[:, None]))
        if c.a is not None:
            if not self._f_zero:
                if c.a != 0.0:
                    out.add_(x, alpha=c.a)
                if c.b != 0.0:
                    out.add_(c.b)
        else:
            out.add_(self.spec.fn["f"](x, t))
        return out

    def denoise(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Tweedie's E[Y | x_t = x] = u x + σ² s_Q / u: the final step to σ = 0 (MATH §9)."""
        c = self.coeffs(t)
        s_q, _ = self.score_q(x, c)
        self.nfe += 1
        return x * c.u + s_q * (c.sigma**2 / c.u)
