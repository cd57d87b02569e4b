"""The native backend: the loop over a time grid that every native solver unit's step runs in.

A unit (dfc.backends.euler, .heun, .exponential) supplies `step(i, x, normals) -> x`, the move
from t_i to t_{i+1}; this loop records, reports progress and checks the particles.
"""

from __future__ import annotations

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


def run_steps(step: Callable, x0: torch.Tensor, ts: np.ndarray, dt: np.ndarray, drift,
              normals: Callable[[int], torch.Tensor],
              progress: Callable[[int], None] | None = None,
              record: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Apply `step` over the grid from x0 at ts[0]. `record(i, x)` receives a copy of the particles
    at every grid time t_i, `progress(i)` the number of finished steps. After every step the
    particles are checked for a blow-up (dfc.blowup; `drift` and the step's effective `dt` name
    the term that dominated)."""
    spec_name = drift.spec.name
    x = x0.clone()
    check_blowup(drift, x, 0, ts[0], 0.0)
    if record is not None:
        record(0, x.clone())
    ts_ = ts.tolist()
    n = len(ts_) - 1
    last_check = 0
    for i in range(n):
        x = step(i, x, normals)
        check_blowup(drift, x, i + 1, ts_[i], dt[i])
        if record is not None:
            record(i + 1, x.clone())
        if progress is not None:
            progress(i + 1)
        if (i + 1) % FINITE_CHECK_EVERY == 0 or i == n - 1:
            _check(x, spec_name, ts_[last_check], ts_[i + 1])
            last_check = i + 1
    return x
