"""Multistep on the drift with its polynomial in log σ (MATH §12): `deis_2m`, `deis_3m`.

In the run's clock c the ODE is dx/dc = F(x, t), F = drift / c'(t). A step from t_i to t_{i+1}
replaces F by the polynomial in v = log σ through its last k values F_i, F_{i-1}, …, F_{i-k+1}
(k = 1 on the first step, 2 on the second, then the method's order) and integrates it exactly:
x_{i+1} = x_i + Σ_j w_ij F_{i-j}, w_ij = ∫ ℓ_ij(log σ(t)) c'(t) dt over the step, ℓ_ij the Lagrange
basis polynomial of node log σ(t_{i-j}). The weights are computed once per grid by Gauss–Legendre
quadrature in t, so one code path serves every spec and clock. One evaluation per step.

On the VE ODE in the σ clock F is the noise prediction (x − D)/σ, and this is DEIS's ρAB with the
log-ρ interpolant (Zhang & Chen 2023): diffusers' `DEISMultistepScheduler` with
`lower_order_final=False`, sample for sample (tested: test_deis_is_diffusers_deis_multistep in
tests/test_peers_diffusers.py). It extrapolates the noise prediction, where DPM-Solver++
(dfc.backends.exponential) interpolates the data prediction in λ = −log σ. ODE specs only (g² = λ²);
σ must be positive and strictly monotone on the grid (a last point with σ = 0 is allowed: log σ is
integrable there).
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial.legendre import leggauss

from dfc.errors import ConfigError
from dfc.solvers import Solver
from dfc.symbolic import time_values

NODES = 64  # Gauss–Legendre nodes per step (the integrand is smooth except log σ at a final σ = 0)


def _values(expr, t: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(time_values(expr, t), dtype=np.float64) * np.ones_like(t)


def log_sigma_nodes(spec, ts: np.ndarray, name: str) -> np.ndarray:
    """log σ at every grid point but the last; a located ConfigError unless σ is positive there and
    strictly monotone on the grid (the last point may have σ = 0)."""
    sigma = _values(spec.exprs["sigma"], ts)
    inner = sigma[:-1]
    if not (np.all(np.isfinite(sigma)) and np.all(inner > 0) and sigma[-1] >= 0
            and (np.all(np.diff(sigma) < 0) or np.all(np.diff(sigma) > 0))):
        raise ConfigError(f"solver {name} interpolates in log σ, and spec {spec.name!r} has a σ that is not "
                          f"positive and strictly monotone on its grid.", spec.run.spans.get("solver"),
                          "Use euler or heun, or a spec whose sigma(t) is monotone and positive.")
    return np.log(inner)


def deis_weights(spec, ts: np.ndarray, order: int) -> list[np.ndarray]:
    """Per step i, the weights w_i0, w_i1, … of F_i, F_{i-1}, … (MATH §12): min(order, i + 1) of them."""
    v = log_sigma_nodes(spec, ts, f"deis_{order}m")
    x, wq = leggauss(NODES)
    out = []
    for i in range(len(ts) - 1):
        k = min(order, i + 1)
        nodes = v[i - k + 1:i + 1][::-1]  # log σ at t_i, t_{i-1}, …
        a, b = ts[i], ts[i + 1]
        tau = 0.5 * (b - a) * x + 0.5 * (a + b)
        with np.errstate(all="ignore"):
            v_tau = np.log(_values(spec.exprs["sigma"], tau))
        if not np.all(np.isfinite(v_tau)):
            raise ConfigError(f"solver deis_{order}m interpolates in log σ, and spec {spec.name!r} has a σ that is "
                              f"not positive inside step {i + 1} (t in [{a:.6g}, {b:.6g}]).",
                              spec.run.spans.get("solver"), "Use euler or heun, or a spec whose sigma(t) stays "
                              "positive before the last grid point.")
        rate = np.asarray(spec.clock_rate(tau), dtype=np.float64) * np.ones_like(tau)
        w = np.empty(k)
        for j in range(k):
            basis = np.ones_like(tau)
            for m in range(k):
                if m != j:
                    basis *= (v_tau - nodes[m]) / (nodes[j] - nodes[m])
            w[j] = 0.5 * (b - a) * float(np.sum(wq * basis * rate))
        out.append(w)
    return out


class Deis(Solver):
    noise = "none"
    summary = "multistep on the drift, polynomial in log σ (DEIS's ρAB on the VE ODE; MATH §12)"

    def __init__(self, name: str = ""):
        super().__init__(name)
        self.order = int(self.name.removeprefix("deis_").removesuffix("m"))
        self.history = self.order - 1

    def check(self, spec) -> None:
        log_sigma_nodes(spec, spec.grid(), self.name)

    def stepper(self, terms, grid):
        drift = terms.drift
        weights = deis_weights(terms.spec, grid.ts, self.order)
        c = _values(terms.spec.clock_expr, grid.ts)
        to_clock = grid.dt_left / np.diff(c)  # 1 / c'(t_i): F_i = drift_i · to_clock_i
        # the amount by which the drift evaluated at t_i moves x in its own step (MATH §10)
        drift.prepare(grid.ts, np.append(np.array([w[0] for w in weights]) * to_clock, 0.0))
        ts, scale = grid.ts.tolist(), to_clock.tolist()
        past: list = []  # F_i, F_{i-1}, … of this run

        def step(i, x, normals):
            if i == 0:
                past.clear()
            past.insert(0, drift(x, ts[i]) * scale[i])
            del past[self.order:]
            for w, f in zip(weights[i].tolist(), past):
                x.add_(f, alpha=w)
            return x

        return step
