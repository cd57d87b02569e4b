"""A stochastic Heun step in the spec's clock (MATH §9): a predictor–corrector on the drift with the
same Gaussian increment in both stages. With zero noise it is exactly EDM's Heun step (Karras et al.
2022, Alg. 1), including its Euler-only last step when σ reaches 0."""

from __future__ import annotations

import math

import numpy as np
import torch

from dfc.solvers import Solver


class Heun(Solver):
    nfe_per_step = 2
    order = 2
    summary = "stochastic Heun (EDM's Heun step without noise)"

    def stepper(self, terms, grid):
        drift = terms.drift
        # the step each evaluation at t_i feeds (MATH §10): its own step, and the corrector's half of the one before
        corrector = np.insert(0.5 * grid.dt_right, 0, 0.0)
        drift.prepare(grid.ts, np.maximum(np.append(grid.dt_left, 0.0), corrector))
        ts, hl, hr = grid.ts.tolist(), grid.dt_left.tolist(), grid.dt_right.tolist()
        n = len(ts) - 1

        def step(i, x, normals):
            t, t_next, h = ts[i], ts[i + 1], hl[i]
            d = drift(x, t)
            nu = drift.noise(t)
            z = normals(i) if nu > 0.0 else None
            scale = nu * math.sqrt(h)  # the increment's standard deviation
            if i == n - 1 and drift.coeffs(t_next).sigma == 0.0:  # EDM: the last step to σ = 0 is Euler's
                x.add_(d, alpha=h)
                if z is not None:
                    x.add_(z, alpha=scale)
                return x
            x_pred = torch.add(x, d, alpha=h)
            if z is not None:
                x_pred.add_(z, alpha=scale)
            d2 = drift(x_pred, t_next)
            x.add_(d, alpha=0.5 * h).add_(d2, alpha=0.5 * hr[i])
            if z is not None:
                x.add_(z, alpha=scale)
            return x

        return step
