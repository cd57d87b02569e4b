"""Time grids (MATH §9): uniform in t, or Karras-spaced in σ and mapped back to t."""

from __future__ import annotations

import numpy as np

from dfc.errors import ConfigError
from dfc.symbolic import time_values


def karras_sigmas(sigma_start: float, sigma_end: float, n: int, rho: float) -> np.ndarray:
    """EDM's grid: σ_i = (σ_start^(1/ρ) + i/n (σ_end^(1/ρ) − σ_start^(1/ρ)))^ρ, i = 0..n."""
    i = np.arange(n + 1) / n
    a, b = sigma_start ** (1 / rho), sigma_end ** (1 / rho)
    return (a + i * (b - a)) ** rho


def _invert_monotone(fn, targets: np.ndarray, lo: float, hi: float, iters: int = 80) -> np.ndarray:
    """t in [lo, hi] with fn(t) = target, for a strictly monotone fn (vectorised bisection)."""
    increasing = fn(np.array([hi]))[0] > fn(np.array([lo]))[0]
    a = np.full_like(targets, lo)
    b = np.full_like(targets, hi)
    for _ in range(iters):
        m = 0.5 * (a + b)
        below = fn(m) < targets if increasing else fn(m) > targets
        a = np.where(below, m, a)
        b = np.where(below, b, m)
    return 0.5 * (a + b)


def make_grid(spec) -> np.ndarray:
    run = spec.run
    t0, t1, n = run.time[0], run.time[1], run.steps
    if run.grid == "uniform":
        return np.linspace(t0, t1, n + 1)
    s = _monotone_sigma(spec, "A Karras grid", run.spans.get("grid"), "Use `grid = uniform`.")
    with np.errstate(all="ignore"):
        target = karras_sigmas(s[0], s[-1], n, run.rho)
    ts = np.concatenate([[t0], _invert_monotone(lambda t: time_values(spec.exprs["sigma"], t), target[1:-1], t0, t1),
                         [t1]])
    if not (np.all(np.isfinite(target)) and np.all(np.diff(ts) > 0)):
        raise ConfigError(f"karras(rho = {run.rho:g}) gives no usable grid of {n} steps for spec {spec.name!r}: "
                          f"σ^(1/ρ) is the same number at both ends in float64 (or overflows), so the steps "
                          f"collapse.", run.spans.get("grid"), "Use a rho between 1 and 100 (EDM's is 7).")
    return ts


def _monotone_sigma(spec, what: str, span, hint: str) -> np.ndarray:
    """σ on a fine probe of [t0, t1], checked strictly monotone (else a ConfigError for `what`)."""
    t0, t1 = spec.run.time
    s = time_values(spec.exprs["sigma"], np.linspace(t0, t1, 4097))
    ds = np.diff(s)
    if not (np.all(ds < 0) or np.all(ds > 0)):
        raise ConfigError(f"{what} needs sigma(t) strictly monotone on [{t0:g}, {t1:g}], and spec "
                          f"{spec.name!r} has a sigma that is not.", span, hint)
    return s


def sigma_to_t(spec, sigmas) -> np.ndarray:
    """The times at which the spec's σ(t) takes the values `sigmas` (MATH §9: a σ grid mapped back
    to t), by bisection; each σ must lie within σ's range on the time interval."""
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    s = _monotone_sigma(spec, "Mapping sigmas to times", None, "Use a spec whose sigma(t) is monotone.")
    lo, hi = float(min(s[0], s[-1])), float(max(s[0], s[-1]))
    slack = 1e-6 * hi
    bad = (sig < lo - slack) | (sig > hi + slack) | ~np.isfinite(sig)
    if bad.any():
        raise ConfigError(f"sigma {sig[bad][0]:g} is outside spec {spec.name!r}'s noise range "
                          f"[{lo:g}, {hi:g}] on t in [{spec.t0:g}, {spec.t1:g}].", None,
                          f"Give sigmas within [{lo:g}, {hi:g}] (a final 0 means the denoising step), or "
                          f"set the spec's sigma_min/sigma_max params to cover them.")
    t0, t1 = spec.run.time
    ts = _invert_monotone(lambda t: time_values(spec.exprs["sigma"], t), np.clip(sig, lo, hi), t0, t1)
    ts[sig >= hi] = t0 if s[0] > s[-1] else t1  # the ends exactly, not to bisection accuracy
    ts[sig <= lo] = t1 if s[0] > s[-1] else t0
    return ts


def clock_steps(spec, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Effective dt of each step, evaluated at its left and at its right end (MATH §9).

    Integrating in the clock τ = c(t), an Euler step from t_i to t_{i+1} moves by
    drift(t)/c'(t) · (c(t_{i+1}) − c(t_i)), i.e. by drift · dt_eff with
    dt_eff = Δc / c'(t). For the t clock dt_eff is Δt at both ends.
    """
    if spec.run.clock == "t":
        dt = np.diff(ts)
        return dt, dt
    c = time_values(spec.clock_expr, ts)
    rate = np.asarray(spec.clock_rate(ts), dtype=np.float64) * np.ones_like(ts)
    dc = np.diff(c)
    return dc / rate[:-1], dc / rate[1:]
