"""Solvers as one seam: a run's terms, its time grid, the registry of solver units, and `solve`.

Every sampler in dfc is one call, `solve(terms, solver, x0, grid)`: `dfc run` (dfc.sample.simulate),
the population pass of `dfc nll` (dfc.likelihood.forward_population) and `dfc train disc`
(dfc.train.train_disc, one step at a time) all go through it.

- `Terms`: what is integrated, built once per run from the compiled spec and its fields: the
  summed drift and the noise (dfc.fields.Drift), and, for the exponential integrators, the
  semi-linear split of MATH §11 (`linear_part`).
- `Grid`: the time points t_0 < … < t_N and each step's effective dt in the run's clock (MATH §9).
- A solver unit (dfc.backends.*) declares what it needs and supports: NFE per step, clocks, noise
  (any, none: ODE specs only, required: SDE specs only), the history it keeps (multistep), its
  backend; `stepper(terms, grid)` returns the function of one native step, `integrate` runs a
  whole grid on another backend. Adding a solver is one file in backends/ and its line in
  `REGISTRY` below.
- `check_run(spec)` is the one place where a run's solver, clock and backend are checked (called
  when a spec is compiled), with a located error naming the option and the fix.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from dfc.errors import ConfigError, NumericalError

# (backend, solver name) -> "module:Class" of its unit, constructed with the name. One line per solver.
REGISTRY = {
    ("native", "euler"): "dfc.backends.euler:Euler",
    ("native", "heun"): "dfc.backends.heun:Heun",
    ("native", "ddim"): "dfc.backends.exponential:Exponential",
    ("native", "dpmpp_2m"): "dfc.backends.exponential:Exponential",
    ("native", "dpmpp_2m_sde"): "dfc.backends.exponential:Exponential",
    ("native", "dpmpp_3m"): "dfc.backends.exponential:Exponential",
    ("native", "dpmpp_3m_sde"): "dfc.backends.exponential:Exponential",
    ("native", "expint_2m"): "dfc.backends.exponential:Exponential",
    ("native", "expint_3m"): "dfc.backends.exponential:Exponential",
    ("native", "deis_2m"): "dfc.backends.deis:Deis",
    ("native", "deis_3m"): "dfc.backends.deis:Deis",
    ("torchsde", "euler"): "dfc.backends.torchsde_backend:TorchsdeMethod",
    ("torchsde", "milstein"): "dfc.backends.torchsde_backend:TorchsdeMethod",
    ("torchsde", "srk"): "dfc.backends.torchsde_backend:TorchsdeMethod",
}
BACKENDS = ("native", "torchsde")
SOLVERS = tuple(dict.fromkeys(name for _, name in REGISTRY))  # every name, in registry order
CLOCKS = ("t", "sigma", "sigma2", "logsigma")


class Solver:
    """A solver unit. Subclasses set the declarations and implement `stepper` (native backend)."""

    name: str = ""
    backend: str = "native"
    nfe_per_step: int = 1
    clocks: tuple = CLOCKS
    noise: str = "any"  # "any"; "none": specs without noise (ODEs); "required": specs with noise (SDEs)
    history: int = 0  # earlier evaluations a step uses (multistep)
    order: int = 1  # nominal order in the step (strong, for ODE specs)
    summary: str = ""

    def __init__(self, name: str = ""):
        self.name = name or self.name

    def check(self, spec) -> None:
        """Requirements beyond the declarations (raise a located ConfigError)."""

    def stepper(self, terms: "Terms", grid: "Grid"):
        """`step(i, x, normals) -> x`: the step from grid.ts[i] to grid.ts[i + 1] (may update x in place).
        Called once per run, before the first step: it also tells the drift which step each of its
        evaluations feeds (Drift.prepare, MATH §10)."""
        raise NotImplementedError

    def integrate(self, terms, x0, grid, seed, progress):  # backends other than native
        raise NotImplementedError


@lru_cache(maxsize=None)
def unit(backend: str, name: str) -> Solver:
    module, cls = REGISTRY[(backend, name)].split(":")
    out = getattr(importlib.import_module(module), cls)(name)
    assert out.backend == backend, (backend, name)
    return out


def solver_for(run) -> Solver:
    """The unit of a run's (backend, solver); a ConfigError naming the fix when there is none."""
    key = (run.backend, run.solver)
    if key in REGISTRY:
        return unit(*key)
    others = [b for b, n in REGISTRY if n == run.solver]
    if others:
        names = ", ".join(n for b, n in REGISTRY if b == run.backend)
        raise ConfigError(f"solver {run.solver} is the {others[0]} backend's; the {run.backend} backend has {names}.",
                          run.spans.get("solver") or run.spans.get("backend"),
                          f"Use `backend = {others[0]}` (--backend {others[0]}), or one of {names}.")
    from dfc.spec import did_you_mean

    raise ConfigError(f"unknown solver {run.solver!r}.", run.spans.get("solver"),
                      did_you_mean(run.solver, SOLVERS) or f"Solvers: {', '.join(SOLVERS)}.")


def check_run(spec) -> Solver:
    """The one check of a run's solver, clock and backend against the spec (called by dfc.compiler)."""
    run = spec.run
    solver = solver_for(run)
    if run.clock not in solver.clocks:
        raise ConfigError(f"solver {solver.name} ({solver.backend}) integrates in the clock(s) "
                          f"{', '.join(solver.clocks)}; this run asks for clock {run.clock!r}.",
                          run.spans.get("clock") or run.spans.get("solver"),
                          f"Use `clock = {solver.clocks[0]}`, or `backend = native`.")
    noisy = spec.exprs["noise2"] != 0
    if solver.noise == "none" and noisy:
        sde = f"{solver.name}_sde"
        sde = sde if (solver.backend, sde) in REGISTRY else "euler or heun"
        raise ConfigError(f"solver {solver.name} integrates ODEs, and spec {spec.name!r} has noise "
                          f"({_noise_in_its_words(spec)}).", run.spans.get("solver"),
                          f"Use {sde}, or the spec's flow twin (g2 = lambda2).")
    if solver.noise == "required" and not noisy:
        plain = solver.name.removesuffix("_sde")
        raise ConfigError(f"solver {solver.name} integrates SDEs, and spec {spec.name!r} has no noise (g² = λ²).",
                          run.spans.get("solver"), f"Use {plain}.")
    solver.check(spec)
    return solver


def _noise_in_its_words(spec) -> str:
    """`g2(t) = (1 + eta)*r(t), lambda2(t) = r(t), eta = 1`: the noise as the spec writes it, g² − λ² ≠ 0."""
    import re

    terms = {t.name: t.text for t in spec.ir.terms}
    said = [f"{name}(t) = {terms[name]}" for name in ("g2", "lambda2") if name in terms]
    words = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", " ".join(said)))
    said += [f"{sym} = {float(v):g}" for sym, v in spec.params.items() if str(sym) in words]
    return ", ".join(said) + ": g² − λ² ≠ 0" if said else f"g² − λ² = {spec.exprs['noise2']}"


def grid_sigma(spec, ts: np.ndarray, solver: str, monotone: bool, why: str, hint: str) -> np.ndarray:
    """σ at the grid times `ts`, for a solver that divides by σ or interpolates in log σ: a located
    ConfigError unless σ is finite, > 0 before the last point and ≥ 0 there, and (`monotone`) strictly
    monotone, so that log σ separates the interpolation points. `why` says what the solver does
    with σ (it opens the messages), `hint` the fix."""
    sig = spec.on_grid("sigma", ts)
    span = spec.run.spans.get("solver")
    if not (np.all(np.isfinite(sig)) and np.all(sig[:-1] > 0) and sig[-1] >= 0):
        raise ConfigError(f"solver {solver} {why}, so it needs σ > 0 on the grid before its last point, and spec "
                          f"{spec.name!r} has σ ≤ 0 (or not finite) at an earlier time.", span, hint)
    if monotone and not (np.all(np.diff(sig) < 0) or np.all(np.diff(sig) > 0)):
        raise ConfigError(f"solver {solver} {why}, and spec {spec.name!r} has a σ that is not strictly monotone on "
                          f"the grid.", span, hint)
    return sig


# ---------------------------------------------------------------------------------------
# The grid and the terms


@dataclass(frozen=True)
class Grid:
    """Times t_0 < … < t_N (float64) and each step's effective dt in the run's clock, evaluated at its
    left and its right end (MATH §9; both Δt in the t clock)."""

    ts: np.ndarray
    dt_left: np.ndarray
    dt_right: np.ndarray

    @classmethod
    def of(cls, spec, ts=None) -> "Grid":
        from dfc.grids import clock_steps

        ts = spec.grid() if ts is None else np.asarray(ts, dtype=np.float64)
        dl, dr = clock_steps(spec, ts)
        return cls(ts, dl, dr)

    @property
    def steps(self) -> int:
        return len(self.ts) - 1

    def window(self, i: int, j: int) -> "Grid":
        """Steps i … j − 1 (grid points i … j)."""
        return Grid(self.ts[i:j + 1], self.dt_left[i:j], self.dt_right[i:j])


class Terms:
    """The terms of a run: the drift and noise (dfc.fields.Drift: the summed drift, the fields, the
    step each evaluation feeds) and, on demand, the linear part of MATH §11."""

    def __init__(self, drift):
        self.drift = drift
        self.spec = drift.spec
        self.name = drift.spec.name

    @classmethod
    def of(cls, spec, fields, estimator=None) -> "Terms":
        from dfc.fields import Drift

        return cls(Drift(spec, fields, estimator))

    @property
    def linear(self):
        """The semi-linear split L(t), c(t), ν(t) of MATH §11 (dfc.backends.exponential.LinearPart)."""
        from dfc.backends.exponential import linear_part

        return linear_part(self.spec)


def solve(terms: Terms, solver: Solver | str, x0: torch.Tensor, grid: Grid, *, generator=None, seed: int = 0,
          normals=None, progress=None, record=None) -> torch.Tensor:
    """Carry x0 from grid.ts[0] to grid.ts[-1] with `solver` (a unit, or a native solver's name).

    `normals(i)` may supply step i's N(0, I) draws (else `generator`'s, in step order); `progress(i)`
    is told each finished step; `record(i, x)` (native only) receives a copy of the particles at
    every grid time. `seed` seeds a backend's own Brownian motion (torchsde)."""
    solver = unit("native", solver) if isinstance(solver, str) else solver
    if solver.backend != "native":
        if record is not None:
            raise ConfigError("following the particles step by step (a callback) needs the native sampler.",
                              terms.spec.run.spans.get("backend"), "Use `backend = native`.")
        return solver.integrate(terms, x0, grid, seed, progress)
    if np.any(grid.dt_left < 0) or np.any(grid.dt_right < 0):
        raise NumericalError("the clock runs backwards on this grid (a negative step).")
    if normals is None:
        normals = lambda i: torch.randn(x0.shape, generator=generator, dtype=x0.dtype,  # noqa: E731
                                        device=x0.device)
    from dfc.backends.native import run_steps

    return run_steps(solver.stepper(terms, grid), x0, grid.ts, grid.dt_left, terms.drift, normals, progress, record)


def solve_run(spec, terms: Terms, x0: torch.Tensor, grid: Grid | None = None, **kw) -> torch.Tensor:
    """`solve` with the run's own solver (checked, see check_run) on the run's grid (default)."""
    return solve(terms, check_run(spec), x0, Grid.of(spec) if grid is None else grid, **kw)
