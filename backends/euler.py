"""Euler–Maruyama in the spec's clock (MATH §9): the drift moves by dt_eff = Δc / c'(t_i), the noise
by sqrt(dt_eff) standard deviations. In the σ clock on the VE ODE it is k-diffusion's Euler."""

from __future__ import annotations

import math

import numpy as np

from dfc.solvers import Solver


class Euler(Solver):
    order = 1
    summary = "Euler–Maruyama in the run's clock (MATH §9)"

    def stepper(self, terms, grid):
        drift = terms.drift
        drift.prepare(grid.ts, np.append(grid.dt_left, 0.0))  # each evaluation feeds its own step (MATH §10)
        ts, hl = grid.ts.tolist(), grid.dt_left.tolist()  # python floats: no per-step conversions

        def step(i, x, normals):
            t, h = ts[i], hl[i]
            d = drift(x, t)
            nu = drift.noise(t)
            z = normals(i) if nu > 0.0 else None
            x.add_(d, alpha=h)
            if z is not None:
                x.add_(z, alpha=nu * math.sqrt(h))
            return x

        return step
