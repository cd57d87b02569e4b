"""Expressions: syntax tree -> sympy, and sympy -> numeric functions.

sympy gives the time derivative (`d/dt`), simplification, LaTeX and the equality tests of
`dfc check`. A spec's text is never evaluated: sympy expressions are built node by node from
the parse tree, and lowered node by node to functions that work on python floats, numpy
arrays and torch tensors alike (so one lowering serves the native sampler, the torchsde
module and the checks).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import sympy as sp
import torch

from dfc.errors import DfcError, SpecNameError

T = sp.Symbol("t", real=True)
X = sp.Symbol("x", real=True)
D = sp.Symbol("D", real=True)  # the discriminator's probability of "real", D(x, t)


def _sigmoid(z):
    return 1 / (1 + sp.exp(-z))


def _softplus(z):
    return sp.log(1 + sp.exp(z))


# name -> (min args, max args, builder)
FUNCTIONS: dict[str, tuple[int, int | None, Callable]] = {
    "sqrt": (1, 1, sp.sqrt),
    "exp": (1, 1, sp.exp),
    "log": (1, 1, sp.log),
    "sin": (1, 1, sp.sin),
    "cos": (1, 1, sp.cos),
    "tanh": (1, 1, sp.tanh),
    "sigmoid": (1, 1, _sigmoid),
    "softplus": (1, 1, _softplus),
    "abs": (1, 1, sp.Abs),
    "min": (2, None, sp.Min),
    "max": (2, None, sp.Max),
    "clamp": (3, 3, lambda z, lo, hi: sp.Min(sp.Max(z, lo), hi)),
}
CONSTANTS = {"pi": sp.pi}


def number(text: str) -> sp.Expr:
    """Exact rational for a decimal literal, so `0.5` prints as 1/2 and simplifies exactly."""
    return sp.Rational(text)


# ---------------------------------------------------------------------------------------
# Lowering: sympy -> python callable over floats / numpy / torch


def _dispatch(torch_fn, np_fn, math_fn):
    def fn(v):
        if isinstance(v, torch.Tensor):
            return torch_fn(v)
        if isinstance(v, np.ndarray):
            return np_fn(v)
        try:
            return math_fn(v)
        except (ValueError, OverflowError, ZeroDivisionError):
            return float("nan")

    return fn


def _mlog(v):
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


_UNARY = {
    sp.exp: _dispatch(torch.exp, np.exp, math.exp),
    sp.log: _dispatch(torch.log, np.log, _mlog),
    sp.sin: _dispatch(torch.sin, np.sin, math.sin),
    sp.cos: _dispatch(torch.cos, np.cos, math.cos),
    sp.tanh: _dispatch(torch.tanh, np.tanh, math.tanh),
    sp.Abs: _dispatch(torch.abs, np.abs, abs),
    sp.sign: _dispatch(torch.sign, np.sign, lambda v: float(np.sign(v))),
}


def _pair(op_t, op_np, op_f):
    def fn(a, b):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            ref = a if isinstance(a, torch.Tensor) else b
            a = a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
            b = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=ref.dtype, device=ref.device)
            return op_t(a, b)
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return op_np(a, b)
        return op_f(a, b)

    return fn


_minimum = _pair(torch.minimum, np.minimum, min)
_maximum = _pair(torch.maximum, np.maximum, max)


def _where(cond, a, b):
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, a, b)
    if isinstance(cond, np.ndarray):
        return np.where(cond, a, b)
    return a if cond else b


def _pow(a, b):
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        return a**b
    try:
        r = float(a) ** b
        return r if not isinstance(r, complex) else math.nan
    except (ZeroDivisionError, OverflowError):
        return math.inf if a == 0 else math.nan


def lower(expr: sp.Expr, args: tuple[sp.Symbol, ...]) -> Callable:
    """A function of `args` that computes `expr` on floats, numpy arrays or torch tensors."""
    index = {s: i for i, s in enumerate(args)}

    def build(e) -> Callable:
        if e in index:
            i = index[e]
            return lambda vals: vals[i]
        if e.is_Number or e in (sp.pi, sp.E) or (not e.free_symbols and e.is_real):
            c = float(e)
            return lambda vals: c
        if e.free_symbols - set(args):
            names = ", ".join(sorted(str(s) for s in e.free_symbols - set(args)))
            raise DfcError(f"internal: unbound symbols {names} in {e}")
        if isinstance(e, sp.Add):
            parts = [build(a) for a in e.args]

            def add(vals):
                out = parts[0](vals)
                for p in parts[1:]:
                    out = out + p(vals)
                return out

            return add
        if isinstance(e, sp.Mul):
            parts = [build(a) for a in e.args]

            def mul(vals):
                out = parts[0](vals)
                for p in parts[1:]:
                    out = out * p(vals)
                return out

            return mul
        if isinstance(e, sp.Pow):
            base, ex = build(e.base), e.exp
            if ex == sp.Rational(1, 2):
                sq = _dispatch(torch.sqrt, np.sqrt, lambda v: math.sqrt(v) if v >= 0 else math.nan)
                return lambda vals: sq(base(vals))
            if ex.is_Integer and not ex.free_symbols:
                n = int(ex)
                return lambda vals: _pow(base(vals), n)
            exf = build(ex)
            return lambda vals: _pow(base(vals), exf(vals))
        if e.func in _UNARY:
            fn, inner = _UNARY[e.func], build(e.args[0])
            return lambda vals: fn(inner(vals))
        if isinstance(e, (sp.Min, sp.Max)):
            op = _minimum if isinstance(e, sp.Min) else _maximum
            parts = [build(a) for a in e.args]

            def minmax(vals):
                out = parts[0](vals)
                for p in parts[1:]:
                    out = op(out, p(vals))
                return out

            return minmax
        if isinstance(e, sp.Heaviside):
            inner = build(e.args[0])
            return lambda vals: _heaviside(inner(vals))
        if isinstance(e, sp.Piecewise):
            pieces = [(build(v), build_cond(c)) for v, c in e.args]

            def piecewise(vals):
                out = math.nan
                for value, cond in reversed(pieces):
                    out = _where(cond(vals), value(vals), out)
                return out

            return piecewise
        raise SpecNameError(f"cannot compute the expression {e} (operation {e.func.__name__} is not supported).")

    def build_cond(c) -> Callable:
        if c is sp.true:
            return lambda vals: True
        if isinstance(c, sp.core.relational.Relational):
            lhs, rhs = build(c.lhs), build(c.rhs)
            ops = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                   ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
            op = ops[c.rel_op]
            return lambda vals: op(lhs(vals), rhs(vals))
        raise SpecNameError(f"cannot compute the condition {c}.")

    body = build(sp.sympify(expr))
    return lambda *vals: body(vals)


def _heaviside(v):
    if isinstance(v, torch.Tensor):
        return torch.heaviside(v, torch.full_like(v, 0.5))
    if isinstance(v, np.ndarray):
        return np.heaviside(v, 0.5)
    return 1.0 if v > 0 else (0.0 if v < 0 else 0.5)


def time_values(expr: sp.Expr, ts: np.ndarray) -> np.ndarray:
    """`expr` (a function of t only) at every t of `ts`, float64."""
    fn = lower(expr, (T,))
    with np.errstate(all="ignore"):
        out = fn(np.asarray(ts, dtype=np.float64))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(ts)).copy()


def is_zero(expr: sp.Expr, probe: Callable[[sp.Expr], bool] | None = None) -> bool:
    """Symbolic zero test, with a numeric fallback for what simplify cannot decide."""
    expr = sp.sympify(expr)
    if expr == 0:
        return True
    try:
        if sp.simplify(expr) == 0:
            return True
    except Exception:  # sympy gives up on some expressions; the numeric probe decides
        pass
    return bool(probe(expr)) if probe is not None else False


def latex(expr: sp.Expr) -> str:
    return sp.latex(expr)
