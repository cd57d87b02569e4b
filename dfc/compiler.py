"""Spec IR + parameter values + run settings -> a checked, numeric `CompiledSpec`.

Compiling substitutes the parameter values, forms the decomposed drift of MATH §2
(eq. 28), checks that the SDE is well posed on the time interval, and lowers every
expression to a function (see `dfc.symbolic.lower`). Backends (`dfc.backends`) turn a
`CompiledSpec` plus fields into a sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sympy as sp

from dfc.errors import IllPosedError, Span, SpecValueError, deep_work
from dfc.runconfig import RunConfig, run_config
from dfc.spec import SpecIR, resolve_params
from dfc.symbolic import D, T, X, constant_problem, lower, time_values

CHECK_POINTS = 2001  # t values at which well-posedness is checked (plus the grid's own points)
X_PROBES = (-3.0, -1.0, 0.0, 0.5, 2.0)
D_PROBES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class CompiledSpec:
    ir: SpecIR
    params: dict  # sympy Symbol -> float
    run: RunConfig
    exprs: dict  # name -> numeric sympy expression (f, beta, g2, lambda2, sigma, u, w_gan, w_score, noise2)

    # ---- the decomposition of MATH §2, eq. 28
    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def t0(self) -> float:
        return self.run.time[0]

    @property
    def t1(self) -> float:
        return self.run.time[1]

    @cached_property
    def uses_D(self) -> bool:
        return self.exprs["beta"].has(D)

    @cached_property
    def has_gan_part(self) -> bool:
        """Whether w_gan = β − ½g² is not identically zero on the time interval."""
        w = self.exprs["w_gan"]
        if w == 0:
            return False
        if w.has(D):
            return True
        ts = np.linspace(self.t0, self.t1, 257)
        return bool(np.any(np.abs(time_values(w, ts)) > 1e-12 * (1 + np.abs(time_values(self.exprs["w_score"], ts)))))

    @cached_property
    def f_linear(self) -> tuple[sp.Expr, sp.Expr] | None:
        """(a(t), b(t)) when f = a(t) x + b(t); None when f is nonlinear in x."""
        f = self.exprs["f"]
        a = sp.diff(f, X)
        if a.has(X):
            return None
        b = sp.simplify(f - a * X)
        return (a, b) if not b.has(X) else None

    @cached_property
    def semilinear(self) -> dict | None:
        """MATH §11: with f = a(t) x + b(t) and s_Q = u (D − u x)/σ² (Tweedie, D = E[Y | x]), the drift is
        L(t) x + c(t) D + N with L = a − w_score u²/σ², c = w_score u/σ² and N = b + w_gan (s_Q − s_p).
        {"L", "c", "b"} as expressions in t; None when f is nonlinear in x."""
        if self.f_linear is None:
            return None
        a, b = self.f_linear
        e = self.exprs
        if e["w_score"] == 0:  # no score part (the GAN presets): nothing multiplies D
            return {"L": a, "c": sp.Integer(0), "b": b}
        return {"L": a - e["w_score"] * e["u"] ** 2 / e["sigma"] ** 2, "c": e["w_score"] * e["u"] / e["sigma"] ** 2,
                "b": b}

    @cached_property
    def prior_values(self) -> tuple:
        """p_0 as (kind, (argument, value), ...) with the parameter values substituted."""
        return (self.ir.prior.kind,) + tuple((k, round(float(v.xreplace(self.params)), 12))
                                             for k, v in self.ir.prior.kwargs)

    @cached_property
    def dynamics_digest(self) -> str:
        """A digest of what moves the particles: the six functions and the prior, parameter values
        substituted. Two specs with one digest (a child that changes only run entries, say) drive
        particles identically on the same grid, so a discriminator stack trained for one serves both."""
        import hashlib

        parts = [f"{k}={sp.srepr(self.exprs[k])}" for k in ("f", "beta", "g2", "lambda2", "sigma", "u")]
        parts.append(f"prior={self.prior_values!r}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @cached_property
    def fn(self) -> dict:
        """Lowered functions: time-only terms take t; f takes (x, t); w_gan takes (t, D)."""
        out = {}
        for name, e in self.exprs.items():
            if name == "f":
                out[name] = lower(e, (X, T))
            elif name in ("beta", "w_gan"):
                out[name] = lower(e, (T, D))
            else:
                out[name] = lower(e, (T,))
        return out

    @cached_property
    def f_linear_fn(self):
        """(a, b) of f = a(t) x + b(t), lowered; None when f is nonlinear in x."""
        return None if self.f_linear is None else tuple(lower(e, (T,)) for e in self.f_linear)

    def on_grid(self, name: str, ts: np.ndarray) -> np.ndarray:
        """A time-only term (or "a"/"b" of a linear f) at every t of `ts`, float64, from the lowered function."""
        fn = self.f_linear_fn["ab".index(name)] if name in ("a", "b") else self.fn[name]
        with np.errstate(all="ignore"):
            out = fn(ts) if name not in ("w_gan", "beta") else fn(ts, 0.5)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), ts.shape).copy()

    def gan_weight_bound(self, ts: np.ndarray) -> np.ndarray:
        """max |w_gan(t, D)| over D ∈ [0, 1] at every t (w_gan is affine in D for every β dfc accepts that
        uses D; the ends and the midpoint are checked), for the stability floor of MATH §10."""
        if not self.uses_D:
            return np.abs(self.on_grid("w_gan", ts))
        with np.errstate(all="ignore"):
            cols = [np.broadcast_to(np.asarray(self.fn["w_gan"](ts, d), dtype=np.float64), ts.shape)
                    for d in (0.0, 0.5, 1.0)]
        return np.max(np.abs(np.stack(cols)), axis=0)

    def at(self, name: str, t: float) -> float:
        """A time-only term at t, as a python float."""
        return float(self.fn[name](float(t)))

    # ---- clocks and grids (MATH §9)
    @cached_property
    def clock_expr(self) -> sp.Expr:
        sigma = self.exprs["sigma"]
        return {"t": T, "sigma": sigma, "sigma2": sigma**2, "logsigma": sp.log(sigma)}[self.run.clock]

    @cached_property
    def clock_rate(self):
        """c'(t) of the chosen clock, lowered."""
        return lower(sp.diff(self.clock_expr, T), (T,))

    def grid(self) -> np.ndarray:
        """The time points t_0 < ... < t_N of the run (float64)."""
        from dfc.grids import make_grid

        return make_grid(self)

    def flow_twin(self) -> "CompiledSpec":
        """MATH §3: the same marginal class with g² := λ², a noiseless flow with the same marginals."""
        exprs = dict(self.exprs)
        exprs["g2"] = exprs["lambda2"]
        exprs.update(w_gan=sp.expand(exprs["beta"] - exprs["g2"] / 2), w_score=exprs["g2"] / 2,
                     noise2=sp.Integer(0))
        return CompiledSpec(self.ir, self.params, self.run, exprs)

    def latex(self) -> str:
        from dfc.backends.latex import spec_latex

        return spec_latex(self)


def numeric_terms(ir: SpecIR, params: dict) -> dict:
    fparams = {k: sp.Float(v) for k, v in params.items()}
    exprs = {}
    for t in ir.terms:
        try:
            e = sp.sympify(t.expr.xreplace(fparams))
            problem = constant_problem(e)
        except (OverflowError, ValueError, TypeError):  # sympy evaluates functions of floats as it builds them
            e, problem = None, "overflows float64 (about 1.8e308)"
        if problem:
            shown = ", ".join(f"{k} = {v:g}" for k, v in params.items() if k in t.expr.free_symbols)
            raise SpecValueError(f"{t.name}, with {shown or 'the param values'}, {problem}.", t.span,
                                 "Choose param values that keep every term a finite real number.")
        exprs[t.name] = e
    exprs["w_gan"] = sp.expand(exprs["beta"] - exprs["g2"] / 2)
    exprs["w_score"] = exprs["g2"] / 2
    exprs["noise2"] = exprs["g2"] - exprs["lambda2"]
    return exprs


def compile_spec(ir: SpecIR, sets: dict[str, str] | None = None, run: dict[str, str] | RunConfig | None = None,
                 check: bool = True) -> CompiledSpec:
    with deep_work(Span(ir.file, 1, 1) if ir.file else None, f"spec {ir.name!r}"):
        return _compile(ir, sets, run, check)


def _compile(ir: SpecIR, sets, run, check: bool) -> CompiledSpec:
    params = resolve_params(ir, sets)
    cfg = run if isinstance(run, RunConfig) else run_config(ir.run, run)
    spec = CompiledSpec(ir, params, cfg, numeric_terms(ir, params))
    for k, v in ir.prior.kwargs:  # the prior's arguments are finite real numbers too
        try:
            val = sp.sympify(v.xreplace({s: sp.Float(x) for s, x in params.items()}))
            problem = constant_problem(val)
            if problem is None and not math.isfinite(float(val)):
                problem = "is not a finite real number"
        except (OverflowError, ValueError, TypeError):
            problem = "is not a finite real float64 number"
        if problem:
            raise SpecValueError(f"the prior's {k} = {v} {problem}.", ir.prior.span,
                                 "Give the prior a finite real mean and a scale > 0.")
    if check:
        check_well_posed(spec)
        from dfc.solvers import check_run

        check_run(spec)  # the run's solver, clock and backend (the one place they are checked)
    return spec


# ---------------------------------------------------------------------------------------
# Well-posedness on [t0, t1] (MATH §1, §2): finite terms, g² − λ² ≥ 0, β ≥ 0, u > 0, σ ≥ 0.


def check_points(spec: CompiledSpec) -> np.ndarray:
    return np.unique(np.concatenate([np.linspace(spec.t0, spec.t1, CHECK_POINTS), [spec.t0, spec.t1]]))


def _fail(spec: CompiledSpec, term: str, message: str, hint: str) -> IllPosedError:
    t = spec.ir.term(term)
    return IllPosedError(f"spec {spec.name!r}: {message}", t.span, hint)


def _values(spec: CompiledSpec, name: str, ts: np.ndarray) -> np.ndarray:
    """A term on the check points; f over x probes, β over D probes: shape (len(ts), probes)."""
    e = spec.exprs[name]
    with np.errstate(all="ignore"):
        if name == "f":
            fn = lower(e, (X, T))
            cols = [np.broadcast_to(np.asarray(fn(np.full_like(ts, x), ts), dtype=float), ts.shape) for x in X_PROBES]
        elif name in ("beta", "w_gan"):
            fn = lower(e, (T, D))
            cols = [np.broadcast_to(np.asarray(fn(ts, np.full_like(ts, d)), dtype=float), ts.shape) for d in D_PROBES]
        else:
            cols = [time_values(e, ts)]
    return np.stack(cols, axis=1)


def _first(ts, bad) -> float:
    return float(ts[np.argmax(bad.any(axis=1) if bad.ndim == 2 else bad)])


def _noise_culprit(spec: CompiledSpec) -> tuple[str, str]:
    """(term to blame, the other) for g² − λ² < 0: the one of g2 and lambda2 that this spec's own file
    writes (a child that sets lambda2 is reported at its line, not at the parent's g2), else g2."""
    own = [n for n in ("lambda2", "g2")
           if spec.ir.term(n).span is not None and spec.ir.term(n).span.file == spec.ir.file]
    if len(own) == 1:
        return own[0], "g2" if own[0] == "lambda2" else "lambda2"
    return ("g2", "lambda2") if spec.ir.term("g2").span is not None else ("lambda2", "g2")


def _time_coefficients(e: sp.Expr) -> list[sp.Expr]:
    """The time-only pieces of a term: the term itself when it has neither x nor D; else, when it is a
    polynomial in x and D (f = a(t) x + b(t), β = β_0(t) + β_1(t) D, ...), its coefficients; else none
    (a term such as tanh(x)/t is left to the grid check)."""
    if not e.has(X, D):
        return [e]
    try:
        return [c for c in sp.Poly(e, X, D).coeffs() if not c.has(X, D)]
    except (sp.PolynomialError, sp.GeneratorsNeeded):
        return []


def _check_between_points(spec: CompiledSpec) -> None:
    """The terms have no pole, and no stretch where a root or log is undefined, between the check
    points either: dfc.singular, from their symbolic form (for f and β, in each time coefficient of
    their polynomial in x and D)."""
    from dfc.singular import singularity

    for name in ("sigma", "u", "g2", "lambda2", "beta", "f"):
        for e in _time_coefficients(spec.exprs[name]):
            found = singularity(e, spec.t0, spec.t1, CHECK_POINTS)
            if found is not None:
                t, why = found
                raise _fail(spec, name, f"{name} is not finite or not real at t = {t:.9g}: {why}.",
                            f"Keep {name} finite and real on the whole time interval [{spec.t0:g}, {spec.t1:g}] "
                            f"(not only at the {CHECK_POINTS} check points), or change `time` in the run block.")


SIGNS = {  # term -> (which values are bad, message, hint)
    "u": (lambda v: v <= 0, "u(t) must be > 0, but u({t}) = {v:.6g}.", "Scale factors are positive."),
    "sigma": (lambda v: v < 0, "sigma(t) must be >= 0, but sigma({t}) = {v:.6g}.",
              "sigma is a noise standard deviation."),
    "beta": (lambda v: v < 0, "beta must be >= 0, but beta = {v:.6g} at t = {t}.",
             "The discriminator weight is non-negative (MATH §1)."),
}


def _check_sign(spec: CompiledSpec, name: str, ts: np.ndarray, v: np.ndarray) -> None:
    is_bad, msg, hint = SIGNS[name]
    bad = is_bad(v)
    if bad.any():
        i = np.argmax(bad.any(axis=1))
        raise _fail(spec, name, msg.format(t=f"{ts[i]:.6g}", v=v[i, np.argmax(bad[i])]), hint)


def _finite_values(spec: CompiledSpec, name: str, ts: np.ndarray) -> np.ndarray:
    """The term at the check points; a located error where it is not finite, and for σ and u where their
    sign is wrong (g², λ² and β divide by them: a zero of u is named at u, not as a pole of the others)."""
    v = _values(spec, name, ts)
    bad = ~np.isfinite(v)
    if bad.any():
        t = _first(ts, bad)
        where = {"f": " for some x", "beta": " for some D in [0, 1]"}.get(name, "")
        raise _fail(spec, name, f"{name} is not finite at t = {t:.6g}{where}.",
                    f"Keep {name} finite on the time interval [{spec.t0:g}, {spec.t1:g}], or change `time` "
                    f"in the run block.")
    if name in ("sigma", "u"):
        _check_sign(spec, name, ts, v)
    return v


def check_well_posed(spec: CompiledSpec) -> None:
    ts = check_points(spec)
    vals = {name: _finite_values(spec, name, ts) for name in ("sigma", "u", "g2", "lambda2", "beta", "f")}
    _check_between_points(spec)
    _check_sign(spec, "beta", ts, vals["beta"])  # after the poles: a pole between the points is named as one
    g2, l2 = vals["g2"][:, 0], vals["lambda2"][:, 0]
    tol = 1e-10 * np.maximum(1.0, np.maximum(np.abs(g2), np.abs(l2)))
    bad = g2 - l2 < -tol
    if bad.any():
        i = int(np.argmax(bad))
        term, other = _noise_culprit(spec)
        where = ""
        other_span = spec.ir.term(other).span
        if other_span is not None and spec.ir.term(term).span is not None \
                and other_span.file != spec.ir.term(term).span.file:
            where = f" It conflicts with the inherited {other} at {other_span}."
        raise _fail(spec, term, f"the noise variance g² − λ² is negative at t = {ts[i]:.6g} "
                                f"(g² = {g2[i]:.6g}, λ² = {l2[i]:.6g}): the SDE is ill-posed there.{where}",
                    "Make g2(t) >= lambda2(t) on the whole time interval (MATH §2); lambda2 < 0 is allowed "
                    "(the analytic continuation).")
    if spec.run.clock != "t":
        rate = np.asarray(spec.clock_rate(ts), dtype=float) * np.ones_like(ts)
        if not np.all(np.isfinite(rate)) or np.any(rate == 0) or (np.any(rate > 0) and np.any(rate < 0)):
            from dfc.errors import ConfigError

            raise ConfigError(f"clock {spec.run.clock!r} is not strictly monotone in t for spec {spec.name!r} "
                              f"(its rate c'(t) is zero, infinite or changes sign on [{spec.t0:g}, {spec.t1:g}]).",
                              spec.run.spans.get("clock"), "Use `clock = t`, or a sigma(t) that changes monotonically.")


# ---------------------------------------------------------------------------------------
# Helpers used by `dfc check`


def tracking_residuals(spec: CompiledSpec) -> dict[str, sp.Expr]:
    """MATH §3: f + (u'/u) x and λ² − (−dσ²/dt)/u²; both vanish under the tracking condition."""
    e = spec.exprs
    u, sigma = e["u"], e["sigma"]
    return {
        "f": e["f"] + sp.diff(u, T) / u * X,
        "lambda2": e["lambda2"] + sp.diff(sigma**2, T) / u**2,
    }


def first_nonzero(spec: CompiledSpec, expr: sp.Expr, ts: np.ndarray | None = None) -> tuple[float, float] | None:
    """(t, value) where `expr` first differs from 0 on the check points, or None if it never does."""
    ts = check_points(spec) if ts is None else ts
    with np.errstate(all="ignore"):
        fn = lower(expr, (X, T, D))
        vals = np.stack([np.broadcast_to(np.asarray(fn(np.full_like(ts, x), ts, np.full_like(ts, 0.5)), dtype=float),
                                         ts.shape) for x in X_PROBES], axis=1)
    scale = 1.0 + np.abs(vals)
    bad = ~(np.abs(vals) <= 1e-8 * scale)
    if not bad.any():
        return None
    i = int(np.argmax(bad.any(axis=1)))
    j = int(np.argmax(bad[i]))
    return float(ts[i]), float(vals[i, j]) if math.isfinite(vals[i, j]) else float("nan")


