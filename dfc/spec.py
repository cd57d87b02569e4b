"""Meaning of a spec: resolve `extends`, names and calls, build the immutable IR (MATH §1–§4).

`load_spec(path_or_name)` returns a `SpecIR`: the six scaling functions as sympy expressions
in `t`, `x`, `D` and the spec's parameters, each with the span and text it came from, plus the
params, the prior and the run entries. Parameter values are applied later, by
`dfc.compiler.compile_spec`, so `--set` can override them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable
from importlib import resources
from pathlib import Path

import sympy as sp

from dfc.errors import ConfigError, DfcError, deep_work, LimitError, SpecCycleError, SpecNameError, SpecSyntaxError, \
    SpecValueError, Span
from dfc.symbolic import CONSTANTS, FUNCTIONS, D, T, X, constant_problem, number, power
from dfc.syntax import BinOp, Call, Ddt, Definition, Neg, Num, PriorStmt, RunEntry, SpecSyntax, Var, \
    parse_expr, read_spec_file

# The six scaling functions, with their argument lists (MATH §1). `g`/`g2` and
# `lambda`/`lambda2` are alternatives; `beta` may also be written beta(t, x).
HEADS = {
    "f": (("x", "t"),),
    "beta": (("t",), ("t", "x")),
    "g": (("t",),),
    "g2": (("t",),),
    "lambda": (("t",),),
    "lambda2": (("t",),),
    "sigma": (("t",),),
    "u": (("t",),),
}
ALTERNATIVES = {"g": "g2", "g2": "g", "lambda": "lambda2", "lambda2": "lambda"}
TERMS = ("f", "beta", "g2", "lambda2", "sigma", "u")
DEFAULTS = {"f": "0", "u": "1"}  # a spec that omits f or u gets these
RESERVED = {"t", "x", "D", "d", *FUNCTIONS, *CONSTANTS}
# Operators, numbers and names of one definition once every definition it calls is written out
# (a call copies its callee's body): a chain of definitions that each call the previous one twice
# doubles at every link, and inlining it would take time exponential in the chain's length.
MAX_EXPANDED = 5_000  # the largest preset expands to 91
PRIORS = {"normal": {"mean", "scale"}, "target": set()}


@dataclass(frozen=True)
class Term:
    """One scaling function: its expression (sympy, params as symbols) and where it came from."""

    name: str
    expr: sp.Expr
    text: str
    span: Span | None


@dataclass(frozen=True)
class Param:
    name: str
    default: sp.Expr  # may refer to other params
    text: str
    span: Span

    @property
    def symbol(self) -> sp.Symbol:
        return param_symbol(self.name)


@dataclass(frozen=True)
class Prior:
    kind: str  # "normal" | "target"
    kwargs: tuple[tuple[str, sp.Expr], ...]
    span: Span | None


@dataclass(frozen=True)
class SpecIR:
    name: str
    description: str
    file: str
    params: tuple[Param, ...]
    terms: tuple[Term, ...]  # in TERMS order
    prior: Prior
    run: tuple[RunEntry, ...]
    chain: tuple[str, ...] = field(default=())  # files from this spec up its `extends` chain
    definitions: tuple[Definition, ...] = field(default=(), compare=False)  # merged, for `dfc check`

    def term(self, name: str) -> Term:
        return next(t for t in self.terms if t.name == name)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def param_symbol(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


# ---------------------------------------------------------------------------------------
# Finding spec files


def preset_dir() -> Path:
    return Path(str(resources.files("dfc.specs")))


def find_spec(name_or_path: str, near: Path | None = None, span: Span | None = None) -> Path:
    """A path as given, or a spec name looked up next to `near`, then among the presets."""
    p = Path(name_or_path)
    if p.suffix in (".dfs", ".yaml", ".yml"):
        if p.exists() or near is None:
            return p
        if (near / p).exists():
            return near / p
        return p
    for folder in ([near] if near else []) + [Path.cwd() / "specs", preset_dir()]:
        for ext in (".dfs", ".yaml", ".yml"):
            cand = folder / f"{name_or_path}{ext}"
            if cand.exists():
                return cand
    known = sorted(q.stem for q in preset_dir().glob("*.dfs"))
    raise SpecNameError(f"no spec named {name_or_path!r} (looked beside the spec and among the presets).", span,
                        " ".join(filter(None, [did_you_mean(name_or_path, known), f"Presets: {', '.join(known)}."])))


# ---------------------------------------------------------------------------------------
# Loading with `extends`


def load_spec(name_or_path: str | Path) -> SpecIR:
    path = find_spec(str(name_or_path))
    with deep_work(Span(str(path), 1, 1)):
        chain = _load_chain(path, [], None)
        return _build(chain)


def load_spec_text(text: str, file: str = "<string>", near: Path | None = None) -> SpecIR:
    """A spec given as text (the .dfs language, or its YAML twin when it starts with `spec:`).

    Errors are located in the text as `<string>:LINE:COL`; `extends PARENT` is looked up beside
    `near` (default: the current directory's `specs/`), then among the presets."""
    from dfc.syntax import parse_dfs, parse_yaml

    is_yaml = text.lstrip().startswith("spec:")
    with deep_work(Span(file, 1, 1)):
        syn = parse_yaml(text, file) if is_yaml else parse_dfs(text, file)
        if syn.extends is None:
            return _build([syn])
        parent_name, parent_span = syn.extends
        parent = find_spec(parent_name, near, parent_span)
        return _build(_load_chain(parent, [], parent_span) + [syn])


def _load_chain(path: Path, seen: list[Path], span: Span | None) -> list[SpecSyntax]:
    key = path.resolve()
    if key in seen:
        names = " -> ".join(p.stem for p in seen + [key])
        raise SpecCycleError(f"`extends` forms a cycle: {names}.", span, "Make one spec stop extending the other.")
    syn = read_spec_file(path)
    if syn.extends is None:
        return [syn]
    parent_name, parent_span = syn.extends
    parent = find_spec(parent_name, path.parent, parent_span)
    return _load_chain(parent, seen + [key], parent_span) + [syn]


def _merge(chain: list[SpecSyntax]):
    params: dict[str, Definition] = {}
    defs: dict[str, Definition] = {}
    prior: PriorStmt | None = None
    run: dict[str, RunEntry] = {}
    description = ""
    for syn in chain:  # root first, so children override
        own_defs: dict[str, Definition] = {}
        own_params: dict[str, Definition] = {}
        for p in syn.params:
            if p.name in own_params:
                raise SpecNameError(f"param {p.name!r} is declared twice.", p.span)
            if p.name in RESERVED or p.name in HEADS:
                raise SpecNameError(f"{p.name!r} is a reserved name and cannot be a param.", p.span,
                                    "Choose another name.")
            own_params[p.name] = p
        for d in syn.definitions:
            if d.name in own_defs:
                raise SpecNameError(f"{d.name!r} is defined twice in this spec.", d.span, "Keep one definition.")
            alt = ALTERNATIVES.get(d.name)
            if alt in own_defs:
                raise SpecNameError(f"define either {d.name} or {alt}, not both.", d.span,
                                    f"{alt} is defined at {own_defs[alt].span}.")
            if d.name in RESERVED:
                raise SpecNameError(f"{d.name!r} is a reserved name and cannot be defined.", d.span,
                                    "Choose another name.")
            if d.name in own_params:
                raise SpecNameError(f"{d.name!r} is both a param and a definition.", d.span)
            own_defs[d.name] = d
        for name, d in own_defs.items():
            defs.pop(ALTERNATIVES.get(name, ""), None)
            params.pop(name, None)
            defs[name] = d
        for name, p in own_params.items():
            defs.pop(name, None)
            params[name] = p
        if syn.prior is not None:
            prior = syn.prior
        for e in syn.run:
            run[e.key] = e
        description = syn.description or description
    return params, defs, prior, run, description


class _Builder:
    """Syntax tree -> sympy, expanding calls to definitions; detects cycles and bad names."""

    def __init__(self, params: dict[str, Definition], defs: dict[str, Definition], opaque: bool = False):
        # opaque: keep calls to definitions as function symbols, r(t) stays r(t) (for `dfc check`)
        self.params, self.defs, self.opaque = params, defs, opaque
        self.cache: dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]] = {}
        self.stack: list[str] = []
        self.sizes: dict[str, int] = {}  # expanded sizes of definitions (MAX_EXPANDED)

    def expanded_size(self, node) -> int:
        """Nodes of `node` once the calls to definitions in it are written out (saturates above
        MAX_EXPANDED; a cycle counts as nothing here: `definition` reports it)."""
        if isinstance(node, Num):
            return 1
        if isinstance(node, Var):
            d = self.defs.get(node.name)
            return 1 + (self._definition_size(node.name) if d is not None and d.args is None else 0)
        if isinstance(node, (Neg, Ddt)):
            return 1 + self.expanded_size(node.operand)
        if isinstance(node, BinOp):
            return min(1 + self.expanded_size(node.left) + self.expanded_size(node.right), MAX_EXPANDED + 1)
        if isinstance(node, Call):
            own = sum(self.expanded_size(a) for a in node.args) + 1
            target = node.name if node.name in self.defs else ALTERNATIVES.get(node.name)
            return min(own + (self._definition_size(target) if target in self.defs else 0), MAX_EXPANDED + 1)
        return 1

    def _first_too_large(self, name: str) -> str:
        """Down the calls from `name` (beyond MAX_EXPANDED), the definition whose own callees are within it."""
        seen = {name}
        while True:
            bigger = [c for c in self._callees(self.defs[name].body)
                      if c not in seen and self._definition_size(c) > MAX_EXPANDED]
            if not bigger:
                return name
            name = bigger[0]
            seen.add(name)

    def _callees(self, node):
        """Names of the definitions that `node` calls or names."""
        if isinstance(node, Var) and node.name in self.defs:
            yield node.name
        elif isinstance(node, Call):
            target = node.name if node.name in self.defs else ALTERNATIVES.get(node.name)
            if target in self.defs:
                yield target
        children = [getattr(node, "operand", None), getattr(node, "left", None), getattr(node, "right", None)]
        for child in children + list(getattr(node, "args", None) or ()):
            if child is not None:
                yield from self._callees(child)

    def _definition_size(self, name: str) -> int:
        if name not in self.sizes:
            self.sizes[name] = 0  # while it is measured: a cycle adds nothing
            self.sizes[name] = min(self.expanded_size(self.defs[name].body), MAX_EXPANDED + 1)
        return self.sizes[name]

    def definition(self, name: str, span: Span | None) -> tuple[tuple[sp.Symbol, ...], sp.Expr]:
        """The body of definition `name` with its own argument symbols."""
        if name in self.cache:
            return self.cache[name]
        if name in self.stack:
            path = " -> ".join(self.stack[self.stack.index(name):] + [name])
            raise SpecCycleError(f"definitions refer to themselves: {path}.", span,
                                 "Write one of them without calling the others.")
        d = self.defs[name]
        if not self.opaque and self._definition_size(name) > MAX_EXPANDED:
            name = self._first_too_large(name)
            d = self.defs[name]
            raise LimitError(f"{name} grows beyond {MAX_EXPANDED:,} operators, numbers and names once the "
                             f"definitions it calls are written out (every call copies its callee's body, so a chain "
                             f"of definitions that each call the one before more than once grows geometrically); dfc "
                             f"accepts at most {MAX_EXPANDED:,}.", d.span,
                             "Call each definition fewer times (x*x costs two copies of x; x^2 one).")
        canonical = {"t": T, "x": X}
        if name in HEADS:
            if d.args not in HEADS[name]:
                want = " or ".join(f"{name}({', '.join(a)})" for a in HEADS[name])
                raise SpecNameError(f"{name} must be written {want}.", d.span)
            syms = tuple(canonical[a] for a in d.args)
        else:
            args = d.args or ()
            if len(set(args)) != len(args):
                raise SpecNameError(f"{name} repeats an argument name.", d.span)
            for a in args:
                if a in self.params or a in self.defs or (a in RESERVED and a not in ("t", "x")):
                    raise SpecNameError(f"argument {a!r} of {name} hides another name.", d.span,
                                        "Rename the argument.")
            syms = tuple(canonical[a] if a in canonical else sp.Dummy(a, real=True) for a in args)
        scope = dict(zip(d.args or (), syms))
        self.stack.append(name)
        try:
            body = self.expr(d.body, scope, name)
        finally:
            self.stack.pop()
        self.cache[name] = (syms, body)
        return syms, body

    def expr(self, node, scope: dict[str, sp.Symbol], where: str) -> sp.Expr:
        value = self._expr(node, scope, where)
        if isinstance(node, (BinOp, Call, Ddt)):  # every constant part is a finite real number, said where
            problem = constant_problem(value)
            if problem:
                raise SpecValueError(f"`{_span_text(node.span)}` {problem}.", node.span,
                                     "Every constant in a spec must be a finite real number.")
        return value

    def _expr(self, node, scope: dict[str, sp.Symbol], where: str) -> sp.Expr:
        ex = lambda n: self.expr(n, scope, where)  # noqa: E731
        if isinstance(node, Num):
            return number(node.text, node.span)
        if isinstance(node, Neg):
            return -ex(node.operand)
        if isinstance(node, BinOp):
            a, b = ex(node.left), ex(node.right)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "^": lambda: power(a, b, node.span)}[node.op]()
        if isinstance(node, Ddt):
            if "t" not in scope:
                raise SpecNameError(f"d/dt needs `t` among the arguments of {where}.", node.span,
                                    f"Write {where}(t) or differentiate inside a function of t.")
            inner = ex(node.operand)
            if inner.has(D):
                raise SpecNameError("d/dt of an expression that uses D(x, t) is not defined.", node.span)
            return sp.diff(inner, scope["t"])
        if isinstance(node, Var):
            name = node.name
            if name in scope:
                return scope[name]
            if name in CONSTANTS:
                return CONSTANTS[name]
            if name in self.params:
                return param_symbol(name)
            if name in self.defs and self.defs[name].args is None:
                return sp.Symbol(name, real=True) if self.opaque else self.definition(name, node.span)[1]
            if name in self.defs or name in HEADS or name in FUNCTIONS or name == "D":
                raise SpecNameError(f"{name} is a function: call it, e.g. {name}(t).", node.span)
            if name in ("t", "x"):
                raise SpecNameError(f"{name!r} is not an argument of {where}.", node.span,
                                    f"Add it to the arguments of {where}, or use a function of {name}.")
            raise SpecNameError(f"unknown name {name!r}.", node.span, self._known_hint())
        if isinstance(node, Call) and node.name == "D":
            if [getattr(a, "name", None) for a in node.args] != ["x", "t"] or "t" not in scope:
                raise SpecNameError("the discriminator is written D(x, t), inside beta.", node.span)
            return D
        if isinstance(node, Call):
            name, args = node.name, [ex(a) for a in node.args]
            if name in FUNCTIONS:
                lo, hi, fn = FUNCTIONS[name]
                if len(args) < lo or (hi is not None and len(args) > hi):
                    want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                    raise SpecNameError(f"{name} takes {want} argument{'s' if lo != 1 or hi != 1 else ''}, "
                                        f"got {len(args)}.", node.span)
                return fn(*args)
            target = name
            if name not in self.defs and name in ALTERNATIVES and ALTERNATIVES[name] in self.defs:
                target = ALTERNATIVES[name]  # g(t) when only g2 is defined, and so on
            if target not in self.defs:
                raise SpecNameError(f"unknown function {name!r}.", node.span, self._known_hint())
            d = self.defs[target]
            if d.args is None:
                raise SpecNameError(f"{name} is a constant, not a function: write {name} without arguments.",
                                    node.span)
            syms, body = self.definition(target, node.span)
            if len(args) != len(syms):
                raise SpecNameError(f"{name} takes {len(syms)} argument{'s' if len(syms) != 1 else ''}, "
                                    f"got {len(args)}.", node.span)
            if self.opaque:
                value = sp.Function(target, real=True)(*args)
            else:
                value = body.xreplace(dict(zip(syms, args)))
            if target != name:  # convert between g and g2, lambda and lambda2
                value = sp.sqrt(value) if name in ("g", "lambda") else value**2
            return value
        raise SpecSyntaxError(f"internal: unknown syntax node {node!r}")

    def _known_hint(self) -> str:
        names = sorted(set(self.params) | set(self.defs))
        funcs = ", ".join(sorted(FUNCTIONS))
        return f"Known here: {', '.join(names) or 'none'}; functions: {funcs}; constant: pi."


def _span_text(span: Span | None) -> str:
    """The source text a span covers (on its line), shortened when long."""
    if span is None or not span.text:
        return "this expression"
    start = span.column - 1
    end = start + span.length
    if span.text[end : end + 1] == "(":  # a call: its name, then up to the matching parenthesis
        depth = 0
        for i in range(end, len(span.text)):
            depth += {"(": 1, ")": -1}.get(span.text[i], 0)
            if depth == 0:
                end = i + 1
                break
    text = span.text[start:end].strip() or "this expression"
    return text if len(text) <= 60 else text[:40] + " ... " + text[-12:]


def _build(chain: list[SpecSyntax]) -> SpecIR:
    syn = chain[-1]
    params, defs, prior_stmt, run, description = _merge(chain)
    # defaults for f and u; required: sigma, beta, g|g2, lambda|lambda2
    for name, text in DEFAULTS.items():
        if name not in defs:
            body, _ = parse_expr(text)
            head = ("x", "t") if name == "f" else ("t",)
            defs[name] = Definition(name, head, body, text, None)
    for need in ("sigma", "beta", ("g", "g2"), ("lambda", "lambda2")):
        options = need if isinstance(need, tuple) else (need,)
        if not any(o in defs for o in options):
            shown = " or ".join(f"{o}(t)" for o in options)
            raise SpecNameError(f"spec {syn.name!r} does not define {shown}.", syn.span,
                                f"Add `{options[-1]}(t) = ...` or extend a preset that has it.")
    b = _Builder(params, defs)
    terms = []
    for name in TERMS:
        src = name if name in defs else ALTERNATIVES[name]
        d = defs[src]
        _, body = b.definition(src, d.span)
        if src in ("g", "lambda"):
            body = body**2
        _check_variables(name, body, d)
        terms.append(Term(name, body, d.text if src == name else f"({d.text})^2", d.span))
    # every definition must make sense, even if unused
    for name, d in defs.items():
        b.definition(name, d.span)
    plist = []
    for name, p in params.items():
        value = b.expr(p.body, {}, f"param {name}")
        plist.append(Param(name, value, p.text, p.span))
    prior = _prior(prior_stmt, b, syn)
    return SpecIR(syn.name, description, syn.file, tuple(plist), tuple(terms), prior, tuple(run.values()),
                  tuple(s.file for s in reversed(chain)), tuple(defs.values()))


def spec_words(ir: SpecIR) -> tuple[dict[str, sp.Expr], Callable[[sp.Expr], sp.Expr]]:
    """The six terms one level deep, calls to the spec's definitions kept by name (`kappa*r(t)`).

    A called definition whose full expansion is short (at most 3 operations: `g2(t)` = 0) is
    replaced by that expansion, so the result reads like the spec and still simplifies.
    """
    defs = {d.name: d for d in ir.definitions}
    params = {p.name: None for p in ir.params}
    full = _Builder(params, defs)
    words = _Builder(params, defs, opaque=True)
    short = {}
    for name, d in defs.items():
        syms, body = full.definition(name, d.span)
        if sp.count_ops(body) <= 3:
            short[name] = (syms, body)

    def inline(e: sp.Expr) -> sp.Expr:
        e = sp.sympify(e)
        reps = {}
        for app in e.atoms(sp.core.function.AppliedUndef):
            fname = app.func.__name__
            if fname in short:
                syms, body = short[fname]
                reps[app] = body.xreplace(dict(zip(syms, app.args)))
        for sym in e.free_symbols:
            if sym.name in short and defs[sym.name].args is None:
                reps[sym] = short[sym.name][1]
        return (e.xreplace(reps) if reps else e).doit()

    out = {}
    for name in TERMS:
        src = name if name in defs else ALTERNATIVES[name]
        body = words.definition(src, defs[src].span)[1]
        out[name] = inline(body**2 if src in ("g", "lambda") else body)
    return out, inline


def _check_variables(name: str, expr: sp.Expr, d: Definition) -> None:
    if expr.has(D) and name != "beta":
        raise SpecNameError(f"{name} uses D(x, t); only beta may depend on the discriminator.", d.span)
    if name == "beta" and expr.has(X):
        raise SpecNameError("beta depends on x only through D(x, t).", d.span,
                            "Write beta(t) = ... using D(x, t), not x itself.")


def _prior(stmt: PriorStmt | None, b: _Builder, syn: SpecSyntax) -> Prior:
    if stmt is None:
        return Prior("normal", (("mean", sp.Integer(0)), ("scale", sp.Integer(1))), None)
    if stmt.kind not in PRIORS:
        raise SpecNameError(f"unknown prior {stmt.kind!r}.", stmt.span,
                            "Use `prior normal(mean = 0, scale = 1)` or `prior target` (exactly Q_0).")
    allowed = PRIORS[stmt.kind]
    kwargs = {}
    for kname, body, _text in stmt.kwargs:
        if kname not in allowed:
            raise SpecNameError(f"prior {stmt.kind} has no argument {kname!r}.", stmt.span,
                                f"Arguments: {', '.join(sorted(allowed)) or 'none'}.")
        kwargs[kname] = b.expr(body, {}, "prior")
    if stmt.kind == "normal":
        kwargs.setdefault("mean", sp.Integer(0))
        kwargs.setdefault("scale", sp.Integer(1))
    return Prior(stmt.kind, tuple(sorted(kwargs.items())), stmt.span)


# ---------------------------------------------------------------------------------------
# Parameter values


def resolve_params(ir: SpecIR, overrides: dict[str, str | float] | None = None,
                   option: str = "--set") -> dict[sp.Symbol, float]:
    """Numeric value of every param, defaults evaluated in dependency order, `--set` applied.

    An override is text (a number or an expression of params) or a Python number, taken as is;
    `option` names where overrides come from in error messages (`--set`, or a keyword argument)."""
    overrides = dict(overrides or {})
    exprs: dict[str, sp.Expr] = {p.name: p.default for p in ir.params}
    for name, text in overrides.items():
        if name not in exprs:
            known = [p.name for p in ir.params]
            raise ConfigError(f"{option} {name}={text}: spec {ir.name!r} has no param {name!r} "
                              f"(params: {', '.join(known) or 'none'}).", None, did_you_mean(name, known))
        exprs[name] = _override_value(ir, name, text, option)
    values: dict[str, float] = {}
    visiting: list[str] = []

    def value(name: str) -> float:
        if name in values:
            return values[name]
        if name in visiting:
            p = ir.param(name)
            raise SpecCycleError(f"params refer to themselves: {' -> '.join(visiting + [name])}.",
                                 p.span if p else None)
        visiting.append(name)
        e = exprs[name]
        subs = {s: sp.Float(value(s.name)) for s in e.free_symbols}
        p = ir.param(name)
        where = f"--set {name}" if name in overrides else f"param {name}"
        try:
            val = sp.sympify(e.xreplace(subs))
            problem = constant_problem(val)
            v = float(val.evalf()) if problem is None else math.nan
        except (TypeError, ValueError, OverflowError):  # complex, or beyond float64
            problem, v = "is not a finite real number", math.nan
        visiting.pop()
        if problem or not math.isfinite(v):
            why = problem or f"is not a finite float64 number ({v})"
            shown = overrides[name] if name in overrides else (p.text if p else str(e))
            raise SpecValueError(f"{where} = {_short_text(shown)} {why}.", p.span if p and name not in overrides
                                 else None, f"Give {name} a finite real value, e.g. --set {name}=0.5.")
        values[name] = v
        return v

    for name in exprs:
        value(name)
    return {param_symbol(k): v for k, v in values.items()}


def _override_value(ir: SpecIR, name: str, value, option: str) -> sp.Expr:
    """A param override as a sympy expression: a Python number directly, text parsed as an expression."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return sp.Float(value) if isinstance(value, float) else sp.Integer(value)
    if not isinstance(value, str):
        raise ConfigError(f"{option} {name}={value!r}: a param value is a number or an expression of params "
                          f"(text), not a {type(value).__name__}.", None, f"Write e.g. {name}=0.5.")
    try:
        body, _ = parse_expr(value, f"{option} {name}")
        return _Builder({p.name: None for p in ir.params}, {}).expr(body, {}, f"{option} {name}")
    except (SpecSyntaxError, SpecNameError) as exc:
        raise ConfigError(f"{option} {name}={_short_text(value)}: the value is not a number or an expression of "
                          f"params ({exc.message}).") from None
    except RecursionError:
        raise LimitError(f"{option} {name}=...: the value nests too deeply.", None, "Write a shorter value.") from None
    except DfcError as exc:
        raise type(exc)(f"{option} {name}={_short_text(value)}: {exc.message}", None, exc.hint) from None


def _short_text(text: str) -> str:
    text = str(text)
    return text if len(text) <= 60 else f"{text[:40]} ... ({len(text)} characters)"


def did_you_mean(name: str, known, what: str = "") -> str | None:
    """A hint naming the closest of `known` to `name` (difflib), or None when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"Did you mean {close[0]!r}?" if close else None
