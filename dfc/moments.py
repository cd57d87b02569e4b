"""Closed-form Gaussian dynamics (MATH §6): the mean-field moment ODEs.

For a Gaussian target q = N(m, S), a Gaussian p_0, f = a(t) x + b(t) and β = β(t), the
DiffFlow marginal stays Gaussian, p_t = N(μ_t, Σ_t), with

    dμ/dt = a μ + b − β C⁻¹ (μ − m/u)
    dΣ/dt = 2a Σ − β (C⁻¹ Σ + Σ C⁻¹) + (2β − λ²) I,        C_t = (S + σ² I)/u².

g does not appear (the marginal-preserving property, MATH §3). Used by the `closed`
population estimate of s_p and by the tests as the reference solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from dfc.errors import ConfigError
from dfc.symbolic import T, lower


def _moment_rhs(spec, m: np.ndarray, S: np.ndarray):
    """The right-hand side of MATH §6's moment equations for q = N(m, S), y = (μ, vec Σ)."""
    lin = spec.f_linear
    if lin is None or spec.uses_D:
        raise ConfigError(f"the closed-form s_p needs f linear in x and beta free of D(x, t); spec "
                          f"{spec.name!r} has {'a nonlinear f' if lin is None else 'beta with D'}.",
                          spec.run.spans.get("fields"), "Use `fields = exact + gauss` or `exact + kde`.")
    a, b = (lower(e, (T,)) for e in lin)
    beta, lam2 = spec.fn["beta"], spec.fn["lambda2"]
    sigma, u = spec.fn["sigma"], spec.fn["u"]
    d = m.shape[0]
    eye = np.eye(d)

    def rhs(t, y):
        mu, sig = y[:d], y[d:].reshape(d, d)
        at, bt, bet, l2 = float(a(t)), float(b(t)), float(beta(t, 0.5)), float(lam2(t))
        st, ut = float(sigma(t)), float(u(t))
        cinv = np.linalg.inv((S + st**2 * eye) / ut**2)
        dmu = at * mu + bt - bet * cinv @ (mu - m / ut)
        dsig = 2 * at * sig - bet * (cinv @ sig + sig @ cinv) + (2 * bet - l2) * eye
        return np.concatenate([dmu, dsig.ravel()])

    return rhs


class GaussianMarginals:
    """μ_t, Σ_t of the spec's marginal on a Gaussian target, from a dense ODE solution."""

    def __init__(self, spec, mean: np.ndarray, cov: np.ndarray, mu0: np.ndarray, cov0: np.ndarray):
        self.m, self.S = np.asarray(mean, float), np.asarray(cov, float)
        rhs = _moment_rhs(spec, self.m, self.S)
        d = self.m.shape[0]
        y0 = np.concatenate([np.asarray(mu0, float).ravel(), np.asarray(cov0, float).ravel()])
        self.t0, self.t1 = spec.t0, spec.t1
        self.sol = solve_ivp(rhs, (spec.t0, spec.t1), y0, method="DOP853", rtol=1e-10, atol=1e-12,
                             dense_output=True)
        if not self.sol.success:
            raise ConfigError(f"the moment equations of MATH §6 could not be integrated for spec {spec.name!r}: "
                              f"{self.sol.message}")
        self.d = d

    def __call__(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        y = self.sol.sol(min(max(t, self.t0), self.t1))
        cov = y[self.d:].reshape(self.d, self.d)
        return y[: self.d], 0.5 * (cov + cov.T)


END_LAW_EVALUATIONS = 20_000  # the end law is a report: a spec whose moment equations need more is not reported


class _OverBudget(Exception):
    pass


@dataclass(frozen=True)
class EndLaw:
    """The spec's mean-field law at t1 on the one-dimensional target q = N(0, 1) (MATH §6, "end law").
    Variances are in the particles' scale, W2 in the data's (x·u_T, as samples are reported)."""

    mean: float  # of p_T
    var: float  # of p_T (≤ 0: the moment equations collapsed before t1)
    var_Q: float  # of Q_T = N(0, (1 + σ_T²)/u_T²), the law p_T should equal
    sigma_T: float  # σ(t1): Q_T is q blurred by it
    w2_Q: float  # W2 between p_T and Q_T: the spec's own bias, zero on the tracking class from p_0 = Q_0
    w2_q: float  # W2 between p_T and q, which also counts the blur of σ_T

    @property
    def var_ratio(self) -> float:
        return self.var / self.var_Q

    def describe(self) -> str:
        head = "on q = N(0, 1), exact s_p and no discretisation (MATH §6, end law), "
        if self.var <= 0:
            return (head + "the variance of p_t reaches zero before T: the marginal equation is "
                    "anti-diffusive there (λ² > 2β), so the mean-field SDE has no solution up to T; check β and "
                    "λ².")
        blur = f", to q = {self.w2_q:.3g} (Q_T is q blurred by σ_T = {self.sigma_T:.3g})" if self.sigma_T > 0 else ""
        return (head + f"p_T has variance {self.var:.4g} against Q_T's {self.var_Q:.4g} (ratio {self.var_ratio:.4g}) "
                f"and mean {self.mean:.2g}: W2 to Q_T = {self.w2_Q:.3g}{blur}.")


def end_law(spec) -> EndLaw | None:
    """p_T on q = N(0, 1) from the moment equations, or None where they do not apply (f not linear in x,
    β with D, a prior that is not Gaussian) or cost more than END_LAW_EVALUATIONS evaluations. A spec with
    w2_Q > 0 is biased at every particle count and step count (MATH §6, end law)."""
    if spec.f_linear is None or spec.uses_D or spec.ir.prior.kind not in ("normal", "target"):
        return None
    t0, t1 = spec.t0, spec.t1
    sigma0, u0 = spec.at("sigma", t0), spec.at("u", t0)
    if spec.ir.prior.kind == "target":
        mu0, var0 = 0.0, (1 + sigma0**2) / u0**2
    else:
        kw = dict(spec.prior_values[1:])
        mu0, var0 = kw.get("mean", 0.0), kw.get("scale", 1.0) ** 2
    rhs, calls = _moment_rhs(spec, np.zeros(1), np.eye(1)), [0]

    def counted(t, y):
        calls[0] += 1
        if calls[0] > END_LAW_EVALUATIONS:
            raise _OverBudget
        return rhs(t, y)

    try:  # LSODA turns stiff where β/C is large (β = 1000: 4 s with DOP853, 0.2 s so)
        sol = solve_ivp(counted, (t0, t1), np.array([mu0, var0], float), method="LSODA", rtol=1e-8, atol=1e-10)
    except _OverBudget:
        return None
    if not sol.success:
        return None
    mean, var = (float(v) for v in sol.y[:, -1])
    sigma1, u1 = spec.at("sigma", t1), spec.at("u", t1)
    sd = u1 * np.sqrt(max(var, 0.0))
    return EndLaw(mean, var, (1 + sigma1**2) / u1**2, float(sigma1),
                  float(np.hypot(u1 * mean, sd - np.sqrt(1 + sigma1**2))), float(np.hypot(u1 * mean, sd - 1.0)))
