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


class GaussianMarginals:
    """μ_t, Σ_t of the spec's marginal on a Gaussian target, from a dense ODE solution."""

    def __init__(self, spec, mean: np.ndarray, cov: np.ndarray, mu0: np.ndarray, cov0: np.ndarray,
                 method: str = "DOP853"):  # method: scipy's solve_ivp method
        lin = spec.f_linear
        if lin is None or spec.uses_D:
            raise ConfigError(f"the closed-form s_p needs f linear in x and beta free of D(x, t); spec "
                              f"{spec.name!r} has {'a nonlinear f' if lin is None else 'beta with D'}.",
                              spec.run.spans.get("fields"), "Use `fields = exact + gauss` or `exact + kde`.")
        a, b = (lower(e, (T,)) for e in lin)
        beta, lam2 = spec.fn["beta"], spec.fn["lambda2"]
        sigma, u = spec.fn["sigma"], spec.fn["u"]
        self.m, self.S = np.asarray(mean, float), np.asarray(cov, float)
        d = self.m.shape[0]
        eye = np.eye(d)

        def rhs(t, y):
            mu, sig = y[:d], y[d:].reshape(d, d)
            at, bt, bet, l2 = float(a(t)), float(b(t)), float(beta(t, 0.5)), float(lam2(t))
            st, ut = float(sigma(t)), float(u(t))
            cinv = np.linalg.inv((self.S + st**2 * eye) / ut**2)
            dmu = at * mu + bt - bet * cinv @ (mu - self.m / ut)
            dsig = 2 * at * sig - bet * (cinv @ sig + sig @ cinv) + (2 * bet - l2) * eye
            return np.concatenate([dmu, dsig.ravel()])

        y0 = np.concatenate([np.asarray(mu0, float).ravel(), np.asarray(cov0, float).ravel()])
        self.t0, self.t1 = spec.t0, spec.t1
        self.sol = solve_ivp(rhs, (spec.t0, spec.t1), y0, method=method, rtol=1e-10, atol=1e-12,
                             dense_output=True)
        if not self.sol.success:
            raise ConfigError(f"the moment equations of MATH §6 could not be integrated for spec {spec.name!r}: "
                              f"{self.sol.message}")
        self.d = d

    def __call__(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        y = self.sol.sol(min(max(t, self.t0), self.t1))
        cov = y[self.d:].reshape(self.d, self.d)
        return y[: self.d], 0.5 * (cov + cov.T)


@dataclass(frozen=True)
class EndLaw:
    """The spec's mean-field law at t1 on the one-dimensional target q = N(0, 1) (MATH §6, "end law")."""

    mean: float  # of p_T, in the particles' scale
    var: float  # of p_T, in the particles' scale
    var_q: float  # of Q_T = N(0, (1 + σ_T²)/u_T²), the law p_T should equal
    w2_q: float  # W2 between p_T in data units (x·u_T) and q itself

    @property
    def var_ratio(self) -> float:
        return self.var / self.var_q

    def describe(self) -> str:
        return (f"on q = N(0, 1), exact s_p and no discretisation (MATH §6, end law), p_T has variance "
                f"{self.var:.4g} against Q_T's {self.var_q:.4g} (ratio {self.var_ratio:.4g}) and mean {self.mean:.2g}: "
                f"W2 to q = {self.w2_q:.3g}.")


def end_law(spec) -> EndLaw | None:
    """p_T on q = N(0, 1) from the moment ODEs, or None where they do not apply (f not linear in x, β with
    D, a prior that is not Gaussian). A spec whose p_T differs from Q_T here is biased at every N and
    every step count: its sliced W2 to q tends to a positive constant as the particle count grows."""
    if spec.f_linear is None or spec.uses_D or spec.ir.prior.kind not in ("normal", "target"):
        return None
    t0, t1 = spec.t0, spec.t1
    sigma0, u0 = spec.at("sigma", t0), spec.at("u", t0)
    if spec.ir.prior.kind == "target":
        mu0, var0 = 0.0, (1 + sigma0**2) / u0**2
    else:
        kw = dict(spec.prior_values[1:])
        mu0, var0 = kw.get("mean", 0.0), kw.get("scale", 1.0) ** 2
    try:
        # LSODA switches to a stiff method where β/C is large (a spec with β = 1000 takes 4 s with DOP853, 0.2 s so)
        law = GaussianMarginals(spec, np.zeros(1), np.eye(1), np.array([mu0]), np.array([[var0]]), method="LSODA")
    except ConfigError:
        return None
    mu, cov = law(t1)
    sigma1, u1 = spec.at("sigma", t1), spec.at("u", t1)
    mean, var = float(mu[0]), float(cov[0, 0])
    w2 = float(np.hypot(u1 * mean, u1 * np.sqrt(max(var, 0.0)) - 1.0))
    return EndLaw(mean, var, (1 + sigma1**2) / u1**2, w2)
