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
from dfc.solvers import Solver, grid_sigma

NODES = 64  # Gauss–Legendre nodes per step (the integrand is smooth except log σ at a final σ = 0)


def check_sigma(spec, ts: np.ndarray, name: str) -> np.ndarray:
    return grid_sigma(spec, ts, name, True, "interpolates the drift in log σ (MATH §12)",
                      "Use euler or heun, or a spec whose sigma(t) is positive and monotone.")


def clock_rate(spec, t: np.ndarray) -> np.ndarray:
    """c'(t) of the run's clock at every t."""
    return np.broadcast_to(np.asarray(spec.clock_rate(t), dtype=np.float64), t.shape)


def deis_weights(spec, ts: np.ndarray, order: int) -> list[np.ndarray]:
    """Per step i, the weights w_i0, w_i1, … of F_i, F_{i-1}, … (MATH §12): min(order, i + 1) of them."""
    v = np.log(check_sigma(spec, ts, f"deis_{order}m")[:-1])
    x, wq = leggauss(NODES)
    out = []
    for i in range(len(ts) - 1):
        k = min(order, i + 1)
        nodes = v[i - k + 1:i + 1][::-1]  # log σ at t_i, t_{i-1}, …
        a, b = ts[i], ts[i + 1]
        tau = 0.5 * (b - a) * x + 0.5 * (a + b)
        with np.errstate(all="ignore"):
            v_tau = np.log(spec.on_grid("sigma", tau))
        if not np.all(np.isfinite(v_tau)):
            raise ConfigError(f"solver deis_{order}m interpolates in log σ, and spec {spec.name!r} has a σ that is "
                              f"not positive inside step {i + 1} (t in [{a:.6g}, {b:.6g}]).",
                              spec.run.spans.get("solver"), "Use euler or heun, or a spec whose sigma(t) stays "
                              "positive before the last grid point.")
        rate = clock_rate(spec, tau)
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
        check_sigma(spec, spec.grid(), self.name)

    def stepper(self, terms, grid):
        drift = terms.drift
        weights = deis_weights(terms.spec, grid.ts, self.order)
        to_clock = 1.0 / clock_rate(terms.spec, grid.ts[:-1])  # F_i = drift_i / c'(t_i)
        # the amount by which the drift evaluated at t_i moves x in its own step (MATH §10)
        drift.prepare(grid.ts, np.append(np.array([w[0] for w in weights]) * to_clock, 0.0))
        ts, scale = grid.ts.tolist(), to_clock.tolist()
        past: list = []  # F_i, F_{i-1}, … of this run (a stepper serves one run)

        def step(i, x, normals):
            past.insert(0, drift(x, ts[i]) * scale[i])
            del past[self.order:]
            for w, f in zip(weights[i].tolist(), past):
                x.add_(f, alpha=w)
            return x

        return step
