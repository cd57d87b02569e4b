"""Closed-form Gaussian dynamics (MATH §6): the mean-field moment ODEs.

For a Gaussian target q = N(m, S), a Gaussian p_0, f = a(t) x + b(t) and β = β(t), the
DiffFlow marginal stays Gaussian, p_t = N(μ_t, Σ_t), with

    dμ/dt = a μ + b − β C⁻¹ (μ − m/u)
    dΣ/dt = 2a Σ − β (C⁻¹ Σ + Σ C⁻¹) + (2β − λ²) I,        C_t = (S + σ² I)/u².

g does not appear (the marginal-preserving property, MATH §3). Used by the `closed`
population estimate of s_p and by the tests as the reference solution.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from dfc.errors import ConfigError
from dfc.symbolic import T, lower


class GaussianMarginals:
    """μ_t, Σ_t of the spec's marginal on a Gaussian target, from a dense ODE solution."""

    def __init__(self, spec, mean: np.ndarray, cov: np.ndarray, mu0: np.ndarray, cov0: np.ndarray):
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
