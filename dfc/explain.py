"""`dfc check`: what a spec is (MATH §2 decomposition, §3 marginal class and tracking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from dfc.compiler import CompiledSpec, first_nonzero, tracking_residuals
from sympy.printing.str import StrPrinter

from dfc.spec import spec_words
from dfc.symbolic import D, T, X, lower

MARGINAL_TERMS = ("f", "beta", "lambda2", "sigma", "u")


class _SpecPrinter(StrPrinter):
    """sympy -> the spec language: `^` for powers, d/dt(...), D(x, t)."""

    def _print_Pow(self, expr, rational=False):
        return super()._print_Pow(expr, rational).replace("**", "^")

    def _print_Derivative(self, expr):
        return f"d/dt({self._print(expr.expr)})"

    def _print_Symbol(self, expr):
        return "D(x, t)" if expr == D else super()._print_Symbol(expr)


def pretty(expr: sp.Expr) -> str:
    """A formula in the spec language's own notation."""
    return _SpecPrinter({"order": "none"}).doprint(expr).replace("**", "^")


def _shortest(*candidates: sp.Expr) -> sp.Expr:
    return min((sp.simplify(c) for c in candidates), key=sp.count_ops)


def decomposition(spec: CompiledSpec) -> dict[str, str]:
    """The weights of MATH §2 eq. 28 in the spec's own words (its definitions kept by name)."""
    words, inline = spec_words(spec.ir)
    names = {d.name for d in spec.ir.definitions}
    g2_name = inline(sp.Function("g2", real=True)(T) if "g2" in names else sp.Function("g", real=True)(T) ** 2)
    return {
        "gan_weight": pretty(_shortest(words["beta"] - g2_name / 2, words["beta"] - words["g2"] / 2)),
        "score_weight": pretty(_shortest(words["g2"] / 2)),
        "noise": pretty(_shortest(sp.sqrt(words["g2"] - words["lambda2"]))),
        "f": pretty(words["f"]),
    }


def linear_part(spec: CompiledSpec) -> str:
    """MATH §11: the L(t) and c(t) of drift = L x + c D + N that the exponential integrators use, in the
    spec's own words."""
    if spec.semilinear is None:
        return "none: f is nonlinear in x (the exponential integrators refuse this spec)"
    words = spec_words(spec.ir)[0]
    a = sp.diff(words["f"], X)
    w = words["g2"] / 2
    if spec.semilinear["c"] == 0:
        return f"L(t) = {pretty(_shortest(a))}, c(t) = 0 (no score part: N is the whole GAN drift)"
    L = a - w * words["u"] ** 2 / words["sigma"] ** 2
    c = w * words["u"] / words["sigma"] ** 2
    return f"L(t) = {pretty(_shortest(L))}, c(t) = {pretty(_shortest(c))}"


@dataclass(frozen=True)
class Tracking:
    holds: bool
    failures: tuple[tuple[str, float, float], ...]  # (which, first t, residual there)

    def describe(self) -> str:
        if self.holds:
            return "holds: f = −(u'/u) x and λ² = −(dσ²/dt)/u² on the whole interval, so p_0 = Q_0 gives p_t = Q_t."
        parts = []
        for which, t, v in self.failures:
            rule = "f = −(u'/u) x" if which == "f" else "λ² = −(dσ²/dt)/u²"
            parts.append(f"{rule} fails from t = {t:.4g} (residual {v:.4g})")
        return "fails: " + "; ".join(parts) + "."


def tracking(spec: CompiledSpec) -> Tracking:
    failures = []
    for which, res in tracking_residuals(spec).items():
        hit = first_nonzero(spec, res)
        if hit is not None:
            failures.append((which, *hit))
    return Tracking(not failures, tuple(failures))


def same_path(a: CompiledSpec, b: CompiledSpec) -> bool:
    """Whether both specs meet the tracking condition with the same σ, u and time interval: from p_0 = Q_0
    both stay on the same Q_t (MATH §3), whatever their β and g² (a VE SDE and its probability-flow ODE)."""
    if a.run.time != b.run.time or not (tracking(a).holds and tracking(b).holds):
        return False
    return all(sp.simplify(a.exprs[k] - b.exprs[k]) == 0 for k in ("sigma", "u"))


def same_marginal_class(a: CompiledSpec, b: CompiledSpec) -> tuple[bool, list[str]]:
    """Whether (f, β, λ², σ, u, p_0) agree on the common time interval (MATH §3)."""
    reasons = []
    if a.run.time != b.run.time:
        reasons.append(f"time intervals differ: {list(a.run.time)} vs {list(b.run.time)}")
    lo, hi = max(a.t0, b.t0), min(a.t1, b.t1)
    ts = np.linspace(lo, hi, 1001) if hi > lo else np.array([lo])
    for name in MARGINAL_TERMS:
        diff = a.exprs[name] - b.exprs[name]
        if diff == 0:
            continue
        fn = lower(diff, (X, T, D))
        scale = lower(sp.Abs(a.exprs[name]) + sp.Abs(b.exprs[name]) + 1, (X, T, D))
        worst = None
        for x in (-2.0, 0.0, 1.5):
            for d in (0.1, 0.5, 0.9):
                with np.errstate(all="ignore"):
                    v = np.abs(np.asarray(fn(np.full_like(ts, x), ts, np.full_like(ts, d)), float) * np.ones_like(ts))
                    s = np.asarray(scale(np.full_like(ts, x), ts, np.full_like(ts, d)), float) * np.ones_like(ts)
                bad = ~(v <= 1e-9 * s)
                if bad.any():
                    i = int(np.argmax(bad))
                    worst = (float(ts[i]), x, d)
                    break
            if worst:
                break
        if worst:
            reasons.append(f"{name} differs (first at t = {worst[0]:.4g})")
    if a.prior_values != b.prior_values:
        reasons.append(f"priors differ: {a.prior_values} vs {b.prior_values}")
    return not reasons, reasons


END_LAW_NOTE = ("A single Gaussian does not show how mass is shared between modes: off the tracking class that "
                "can be wrong too (diffflow_gan on grid25, benchmarks/own_law.py).")


def report(spec: CompiledSpec) -> dict:
    """Everything `dfc check` prints, as data."""
    ir = spec.ir
    track = tracking(spec)
    out = {
        "name": ir.name,
        "description": ir.description,
        "file": ir.file,
        "extends": [str(p) for p in ir.chain[1:]],
        "params": {p.name: float(spec.params[p.symbol]) for p in ir.params},
        "decomposition": decomposition(spec),
        "marginal_class": {n: pretty(sp.simplify(w)) for n, w in spec_words(ir)[0].items() if n in MARGINAL_TERMS} | {
            "p0": f"{ir.prior.kind}(" + ", ".join(f"{k} = {pretty(sp.powdenest(v, force=True))}"
                                                  for k, v in ir.prior.kwargs) + ")"},
        "tracking": track.describe(),
        "tracking_holds": track.holds,
        "has_gan_part": spec.has_gan_part,
        "uses_D": spec.uses_D,
        "time": list(spec.run.time),
        "latex": spec.latex(),
    }
    out["linear_part"] = linear_part(spec)
    kind = "pure GAN flow (g = 0)" if spec.exprs["g2"] == 0 else (
        "score/Langevin-type sampler (β = ½g², no GAN part)" if not spec.has_gan_part else "mixed GAN + score dynamics")
    out["kind"] = kind
    from dfc.moments import end_law

    law = end_law(spec)
    if law is not None:
        out["end_law"] = law.describe()
        if not track.holds and law.var > 0:  # off the tracking class a mixture's modes can still get wrong masses
            out["end_law_note"] = END_LAW_NOTE
        out["end_law_w2"] = law.w2_Q
    if not track.holds:
        out["tracking_note"] = ("The spec relies on its GAN part to pull p_t toward Q_t." if spec.has_gan_part else
                                "With no GAN part nothing pulls p_t back toward Q_t; p_t follows its own marginal class.")
    return out
