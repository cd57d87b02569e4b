"""The torchsde backend: a compiled spec as a `torchsde`-integrable module.

`DiffFlowSDE.f(t, y)` is the decomposed drift of MATH §2 over the whole particle batch `y`
(N, D), because s_p is estimated from it (mean-field); `g(t, y)` is the diagonal Itô noise
sqrt(g² − λ²). `integrate` steps exactly on the run's time grid, one `sdeint` call per
interval, with any of torchsde's fixed-step methods (euler, milstein, srk).
"""

from __future__ import annotations

import numpy as np
import torch
import torchsde

from dfc.blowup import check_blowup
from dfc.errors import ConfigError
from dfc.solvers import Solver


class TorchsdeMethod(Solver):
    """One of torchsde's fixed-step methods (euler, milstein, srk), stepping exactly on the run's grid."""

    backend = "torchsde"
    clocks = ("t",)
    summary = "torchsde's fixed-step method on the run's grid (t clock)"

    def __init__(self, name: str):
        super().__init__(name)
        self.order = {"srk": 1.5}.get(name, 1)  # strong orders (srk: with additive noise, as here)

    def integrate(self, terms, x0, grid, seed, progress):
        return integrate(terms.drift, x0, grid.ts, self.name, seed, progress=progress)


class DiffFlowSDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift):
        super().__init__()
        self.drift = drift

    def f(self, t, y):
        return self.drift(y, float(t))

    def g(self, t, y):
        return y.new_full(y.shape, self.drift.noise(float(t)))


def brownian(x0: torch.Tensor, ts: torch.Tensor, seed: int, method: str = "euler") -> torchsde.BrownianInterval:
    """Brownian motion over the grid (ends as the state's dtype rounds them); srk needs its Lévy area."""
    levy = "space-time" if method == "srk" else "none"
    return torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=tuple(x0.shape), dtype=x0.dtype,
                                     device=x0.device, entropy=seed, levy_area_approximation=levy)


def prepared(drift, x0: torch.Tensor, ts: np.ndarray) -> tuple[DiffFlowSDE, torch.Tensor]:
    """The SDE module and the grid as a tensor of the state's dtype, the drift's coefficients prepared
    at the grid's times as that dtype rounds them (torchsde calls f and g there), each with the step
    it feeds (MATH §10's bandwidth floor)."""
    if drift.spec.run.clock not in TorchsdeMethod.clocks:  # the API's view (dfc.api) of any run
        raise ConfigError("the torchsde backend integrates in the t clock; this run asks for clock "
                          f"{drift.spec.run.clock!r}.", drift.spec.run.spans.get("clock"),
                          "Use `backend = native` for other clocks, or `clock = t`.")
    grid = torch.tensor(ts, dtype=x0.dtype, device=x0.device)
    rounded = grid.detach().cpu().double().numpy()
    drift.prepare(rounded, np.append(np.diff(rounded), 0.0))
    return DiffFlowSDE(drift), grid


def integrate(drift, x0: torch.Tensor, ts: np.ndarray, method: str = "euler", seed: int = 0,
              bm=None, progress=None) -> torch.Tensor:
    sde, grid = prepared(drift, x0, ts)
    bm = bm if bm is not None else brownian(x0, grid, seed, method)
    x = x0
    check_blowup(drift, x, 0, float(grid[0]), 0.0)
    for i in range(len(ts) - 1):
        with torch.no_grad():
            x = torchsde.sdeint(sde, x, grid[i : i + 2], method=method, dt=float(grid[i + 1] - grid[i]), bm=bm)[-1]
        check_blowup(drift, x, i + 1, float(grid[i]), float(grid[i + 1] - grid[i]))
        if progress is not None:
            progress(i + 1)
    return x
