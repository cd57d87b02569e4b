"""Expressions: syntax tree -> sympy, and sympy -> numeric functions.

sympy gives the time derivative (`d/dt`), simplification, LaTeX and the equality tests of
`dfc check`. A spec's text is never evaluated: sympy expressions are built node by node from
the parse tree, and lowered node by node to functions that work on python floats, numpy
arrays and torch tensors alike (so one lowering serves the native sampler, the torchsde
module and the checks).
"""

from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np
import sympy as sp
import torch

from dfc.errors import DfcError, LimitError, SpecNameError, SpecValueError

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


# ---------------------------------------------------------------------------------------
# Limits on what a spec may ask of exact arithmetic (README "Checks"): numbers stay exact
# rationals where that is cheap, and are evaluated in floating point (or refused) where it is not.

from dfc.syntax import MAX_LITERAL_CHARS  # noqa: E402 - a number literal has at most this many characters
MAX_EXACT_BITS = 100_000  # a constant power is computed exactly only if its result has at most this many bits
MAX_EXPONENT = 1000  # |n| in EXPR^n when EXPR depends on t, x or a param
FLOAT_MAX = 1.7976931348623157e308
_NONFINITE = (sp.zoo, sp.nan, sp.oo, sp.S.NegativeInfinity)
_LITERAL = re.compile(r"^[+-]?(\d*)\.?(\d*)(?:[eE]([+-]?\d+))?$")


def number(text: str, span=None) -> sp.Expr:
    """Exact rational for a decimal literal, so `0.5` prints as 1/2 and simplifies exactly.
    A literal beyond float64's range (or longer than MAX_LITERAL_CHARS) is refused at `span`."""
    text = text.strip()
    m = _LITERAL.match(text)
    if len(text) > MAX_LITERAL_CHARS or m is None:
        raise LimitError(f"the number literal {text[:20]}... has {len(text)} characters; dfc reads literals of at "
                         f"most {MAX_LITERAL_CHARS}.", span, "Write it with an exponent, e.g. 1.5e30.")
    digits = (m.group(1) + m.group(2)).lstrip("0")
    if digits:
        exp10 = int(m.group(3) or 0) - len(m.group(2)) + len(digits) - 1  # decimal exponent of the leading digit
        if exp10 > 308 or (exp10 == 308 and float(text) > FLOAT_MAX):
            raise SpecValueError(f"the number {text} is beyond float64's range (about 1.8e308).", span,
                                 "Use a smaller number: every value dfc computes with is a float64.")
        if exp10 < -330:  # below the smallest float64: it is 0 in every computation
            return sp.Integer(0)
    return sp.Rational(text)


def _bits(r: sp.Rational) -> int:
    return max(int(r.p).bit_length(), int(r.q).bit_length())


def _mpf(r):
    import mpmath

    return mpmath.mpf(r.p) / r.q if isinstance(r, sp.Rational) else mpmath.mpf(float(r))


def _real(e: sp.Expr, span=None):
    """The value of the constant `e` (30 digits), which must be a finite real number."""
    value = e.evalf(30)
    if not (value.is_real and value.is_finite):
        raise SpecValueError(f"{_short(e)} is not a finite real number.", span,
                             "Every constant in a spec must be a finite real number.")
    return value


def power(a: sp.Expr, b: sp.Expr, span=None) -> sp.Expr:
    """a^b with bounded work: an exact power of two numbers only when the result is small
    (MAX_EXACT_BITS), else a float64 value (or an error when it is not one); an expression in
    t, x or params raised to a number only up to |n| <= MAX_EXPONENT."""
    if a.free_symbols or b.free_symbols:
        if a.free_symbols and not b.free_symbols and abs(_real(b, span)) > MAX_EXPONENT:
            raise LimitError(f"the exponent {_short(b)} is beyond dfc's limit of {MAX_EXPONENT} for a power of an "
                             f"expression in t, x or params.", span, "Use a smaller exponent.")
        return a**b
    if not (a.is_Number and b.is_Number):  # constants that are not numbers: sqrt(2), pi, exp(1), ...
        if b.is_Rational and abs(b.p) <= 64 and b.q <= 64:
            return a**b  # a small exponent: exact, as cheap as the base
        a, b = (e if e.is_Number else sp.Float(_real(e, span), 30) for e in (a, b))  # else by value, bounded below
    return _number_power(a, b, span)


def _number_power(a: sp.Number, b: sp.Number, span=None) -> sp.Expr:
    if a == 0:
        if b < 0:
            raise SpecValueError(f"0^{_short(b)} is not finite (a division by zero).", span,
                                 "Keep the base of a negative power away from 0.")
        return sp.Integer(1) if b == 0 else sp.Integer(0)
    exact = isinstance(a, sp.Rational) and isinstance(b, sp.Rational)
    if exact and abs(b.p) <= MAX_EXACT_BITS and b.q <= 64 and _bits(a) * abs(b.p) <= MAX_EXACT_BITS:
        return a**b  # small: exact (roots stay symbolic: 2^(1/2) is sqrt(2))
    if a < 0 and not (b.is_Integer or (isinstance(b, sp.Float) and float(b).is_integer())):
        raise SpecValueError(f"{_short(a)}^{_short(b)} is not a real number (a negative base to a fractional power).",
                             span, "Make the base non-negative.")
    import mpmath

    with mpmath.workprec(64):
        base, exponent = abs(_mpf(a)), _mpf(b)
        digits = exponent * mpmath.log10(base)  # log10 of the magnitude, without computing it
        if digits > mpmath.log10(FLOAT_MAX):
            raise SpecValueError(f"{_short(a)}^{_short(b)} is about 10^{mpmath.nstr(digits, 4)}, beyond "
                                 f"float64's range (about 1.8e308).", span, "Use a smaller base or exponent.")
        # a huge exponent by exp and log: mpmath's power squares once per bit of an integer exponent
        value = float(mpmath.exp(exponent * mpmath.log(base)) if abs(exponent) > 2**64 else mpmath.power(base, exponent))
    if a < 0 and int(b) % 2:
        value = -value
    return sp.Float(value)


def _short(e) -> str:
    s = str(e.evalf(8) if isinstance(e, sp.Float) else e)
    return s if len(s) <= 24 else f"{s[:10]}...{s[-6:]} ({len(s)} characters)"


def constant_problem(e: sp.Expr) -> str | None:
    """Why `e` (or a constant part of it) is not a finite real float64 number, or None when nothing is wrong.
    Constant parts are evaluated numerically (15 digits), never asked symbolically: sympy's assumptions
    evaluate towers such as exp(exp(exp(...))) at growing precision without bound."""
    if e.has(*_NONFINITE):
        return "is not finite (a division by zero, log(0), an infinity)"
    if e.has(sp.I):
        return "is not a real number (the square root or log of a negative number?)"
    stack = [e]
    while stack:
        node = stack.pop()
        if node.is_Atom:
            if node.is_Float and not math.isfinite(float(node)):
                return "is beyond float64's range (about 1.8e308)"
            continue
        if not node.free_symbols:
            why = _numeric_problem(node)
            if why:
                return why
            continue
        stack.extend(node.args)
    return None


def _numeric_problem(node: sp.Expr) -> str | None:
    try:
        v = node.evalf(15)
        if v.has(*_NONFINITE):
            return "is not finite (a division by zero, log(0), an infinity)"
        re_, im = (complex(v).real, complex(v).imag)
    except (OverflowError, TypeError, ValueError):
        return "is beyond float64's range (about 1.8e308), or not a number"
    if not (math.isfinite(re_) and math.isfinite(im)):
        return "is beyond float64's range (about 1.8e308)"
    if abs(im) > 1e-12 * max(1.0, abs(re_)):
        return "is not a real number (a root or log of a negative number?)"
    return None


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
            try:
                c = float(e)
            except (OverflowError, TypeError, ValueError):  # beyond float64: the checks report it, located
                c = math.nan
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
