"""Singularities of a time function between check points, from its symbolic form.

The compiler checks well-posedness on a grid of t values (dfc.compiler.CHECK_POINTS); a pole or a
narrow stretch where a square root or a log is undefined can fall between two of them:
`1 + 1/(t - 0.123456789)^2` is finite at every grid point. `singularity` looks where an expression
can be undefined — a base raised to a negative power (a denominator), a log's argument, a base
raised to a non-integer power (a radicand) — and finds the real zeros of each such sub-expression on
[t0, t1] exactly, as the roots of its numerator when that is a polynomial in t of degree at most
MAX_DEGREE. Other forms (exp(t) - 2 in a denominator, say) are left to the grid: the work is bounded
by the expression's size (at most MAX_PARTS sub-expressions, each of at most MAX_OPS nodes, and numerators of at most that degree).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from dfc.symbolic import T, time_values

MAX_DEGREE = 64  # a numerator of higher degree is left to the grid
MAX_PARTS = 50  # sub-expressions examined per expression
MAX_OPS = 200  # operations of one sub-expression examined
POLE = 1e8  # a zero of a denominator is a pole if the term there exceeds POLE × (1 + its largest grid value)


@lru_cache(maxsize=1024)  # presets share their terms: each is examined once per process
def singularity(expr: sp.Expr, t0: float, t1: float, points: int) -> tuple[float, str] | None:
    """(t, why) for a point of [t0, t1] where the time function `expr` is undefined, or None if the
    symbolic form shows none (or cannot tell: the grid check then stands alone). `points`: the number
    of evenly spaced check points of the grid check, where `expr` is already known to be finite."""
    parts = _parts(expr)
    if not parts:
        return None
    scale = 1.0 + float(np.max(np.abs(time_values(expr, np.linspace(t0, t1, points)))))
    for base, kind in parts:
        roots = _real_roots(base, t0, t1)
        if roots is None:
            continue
        found = _judge(expr, base, kind, roots, t0, t1, scale)
        if found is not None:
            return found
    return None


def _parts(expr: sp.Expr) -> list[tuple[sp.Expr, str]]:
    """(sub-expression, kind) where `expr` may be undefined: "pole" (a base to a negative power),
    "log" (a log's argument), "root" (a base to a non-integer power); time-only ones, at most MAX_PARTS."""
    out = []
    for node in sp.preorder_traversal(expr):
        if len(out) >= MAX_PARTS:
            break
        if isinstance(node, sp.Pow) and node.exp.is_number:
            if node.exp.is_negative:
                out.append((node.base, "pole"))
            if not node.exp.is_integer:
                out.append((node.base, "root"))
        elif isinstance(node, sp.log):
            out.append((node.args[0], "log"))
    return [(b, k) for b, k in out if b.free_symbols == {T} and _small(b)]


def _small(e: sp.Expr) -> bool:
    """Whether `e` has at most MAX_OPS nodes (counted no further than that)."""
    for count, _ in enumerate(sp.preorder_traversal(e)):
        if count >= MAX_OPS:
            return False
    return True


def _degree_bound(e: sp.Expr) -> int | None:
    """An upper bound of the degree in t of the numerator of `e` put over one denominator, or None if
    `e` is not a rational function of t. Cheap: nothing is expanded, so a huge power is seen as one."""
    if e == T:
        return 1
    if e.is_number:
        return 0
    if isinstance(e, (sp.Add, sp.Mul)):
        degs = [_degree_bound(a) for a in e.args]
        return None if None in degs else sum(degs)
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        d = _degree_bound(e.base)
        return None if d is None else d * abs(int(e.exp))
    return None


def _real_roots(base: sp.Expr, t0: float, t1: float) -> list[float] | None:
    """The real zeros of `base` on [t0, t1] (sorted), or None when its numerator is not a polynomial in
    t of degree at most MAX_DEGREE."""
    degree = _degree_bound(base)
    if degree is None or degree > MAX_DEGREE:
        return None
    num = sp.numer(sp.together(base))
    try:
        coeffs = [float(c) for c in sp.Poly(num, T).all_coeffs()]
    except (sp.PolynomialError, TypeError, ValueError, OverflowError):
        return None
    if len(coeffs) < 2 or not np.all(np.isfinite(coeffs)):
        return None
    roots = np.roots(coeffs)
    near_real = np.abs(roots.imag) <= 1e-6 * (1.0 + np.abs(roots.real))  # a double root comes out as a close pair
    return sorted(float(r) for r in roots[near_real].real if t0 <= r <= t1)


def _judge(expr, base, kind, roots, t0, t1, scale) -> tuple[float, str] | None:
    """The first point where `expr` is undefined, given the zeros `roots` of its sub-expression `base`."""
    if kind == "pole":
        for r in roots:
            value = time_values(expr, np.array([r]))[0]
            if not np.isfinite(value) or abs(value) > POLE * scale:
                return r, f"its denominator {base} vanishes there (a pole)"
        return None
    if kind == "log" and roots:
        return roots[0], f"the argument {base} of its log vanishes there"
    # the stretches between zeros: a radicand (or a log's argument) negative on one is undefined there
    ends = [t0, *roots, t1]
    what = "log" if kind == "log" else "non-integer power"
    for a, b in zip(ends[:-1], ends[1:]):
        if b > a and time_values(base, np.array([0.5 * (a + b)]))[0] < 0:
            return 0.5 * (a + b), f"{base} is negative on ({a:.9g}, {b:.9g}), so its {what} is not real there"
    return None
