"""The native sampler: Euler–Maruyama and a stochastic Heun step over a fixed time grid.

Both integrate `dx = drift(x, t) dt + noise(t) dW` in the spec's clock (MATH §9): a step from
t_i to t_{i+1} moves the drift by `dt_eff = Δc / c'(t)` and the noise by `sqrt(dt_eff)`.
The Heun step is a predictor–corrector on the drift with the same Gaussian increment in both
stages; with zero noise it is exactly EDM's Heun step (Karras et al. 2022, Alg. 1), including
its Euler-only last step when σ reaches 0.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from dfc.blowup import check_blowup
from dfc.errors import NumericalError

FINITE_CHECK_EVERY = 8  # steps between checks for non-finite particles (a check costs a sync)


def _check(x: torch.Tensor, spec_name: str, t_from: float, t_to: float) -> None:
    if not bool(torch.isfinite(x).all()):
        raise NumericalError(
            f"spec {spec_name!r}: particles became non-finite between t = {t_from:.6g} and t = {t_to:.6g}.",
            None, "The step is too coarse for this drift there: use more --steps, a Karras grid, another "
                  "clock, or a smaller GAN weight.")


def sample(drift, x0: torch.Tensor, ts: np.ndarray, dt_left: np.ndarray, dt_right: np.ndarray,
           solver: str = "euler", generator: torch.Generator | None = None,
           normals: Callable[[int], torch.Tensor] | None = None,
           progress: Callable[[int], None] | None = None,
           record: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate from x0 at ts[0] to ts[-1]. `normals(i)` may supply the N(0, I) draws of step i.

    Without `normals`, the draws come from `generator` in step order. `record(i, x)` receives a
    copy of the particles at every grid time t_i.
    """
    if solver not in ("euler", "heun"):
        raise ValueError(solver)
    if np.any(dt_left < 0) or np.any(dt_right < 0):
        raise NumericalError("the clock runs backwards on this grid (a negative step).")
    # the step each evaluation at t_i feeds (MATH §10): its own step, and Heun's corrector's half of the one before
    corrector = np.insert(0.5 * dt_right, 0, 0.0) if solver == "heun" else 0.0
    drift.prepare(ts, np.maximum(np.append(dt_left, 0.0), corrector))
    if normals is None:
        normals = lambda i: torch.randn(x0.shape, generator=generator, dtype=x0.dtype,  # noqa: E731
                                        device=x0.device)
    x = x0.clone()
    check_blowup(drift, x, 0, ts[0], 0.0)
    if record is not None:
        record(0, x.clone())
    ts_, hl, hr = ts.tolist(), dt_left.tolist(), dt_right.tolist()  # python floats: no per-step conversions
    n = len(ts_) - 1
    last_check = 0
    for i in range(n):
        t, t_next, h = ts_[i], ts_[i + 1], hl[i]
        d = drift(x, t)
        nu = drift.noise(t)
        z = normals(i) if nu > 0.0 else None
        scale = nu * math.sqrt(h)  # the increment's standard deviation
        if solver == "euler" or (i == n - 1 and drift.coeffs(t_next).sigma == 0.0):
            x.add_(d, alpha=h)
            if z is not None:
                x.add_(z, alpha=scale)
        else:  # Heun: predictor, then the trapezoid of the two drifts, one Gaussian increment
            x_pred = torch.add(x, d, alpha=h)
            if z is not None:
                x_pred.add_(z, alpha=scale)
            d2 = drift(x_pred, t_next)
            x.add_(d, alpha=0.5 * h).add_(d2, alpha=0.5 * hr[i])
            if z is not None:
                x.add_(z, alpha=scale)
        check_blowup(drift, x, i + 1, t, h)
        if record is not None:
            record(i + 1, x.clone())
        if progress is not None:
            progress(i + 1)
        if (i + 1) % FINITE_CHECK_EVERY == 0 or i == n - 1:
            _check(x, drift.spec.name, ts_[last_check], t_next)
            last_check = i + 1
    return x
