"""Front ends: `.dfs` text (Lark, grammar/dfs.lark) and its YAML twin, both to one syntax tree.

The syntax tree keeps every statement's source span and the exact text of each expression,
so errors point at the text and `dfc fmt` converts between the two formats without
re-printing expressions. Nothing here evaluates anything: meaning is given in `dfc.spec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from dfc.errors import DfcError, LimitError, Span, SpecSyntaxError, span_from_text

# Limits on the size of what is parsed (README "Checks"); each is refused with its place.
MAX_SPEC_BYTES = 1_000_000  # a spec file
MAX_DEPTH = 200  # nesting of an expression: each operator, unary minus, call and list is a level
MAX_NODES = 20_000  # operators, calls, numbers and names in one file or expression
MAX_LITERAL_CHARS = 400  # a number literal (as in dfc.symbolic)

# ---------------------------------------------------------------------------------------
# Expression syntax tree


@dataclass(frozen=True)
class Num:
    text: str
    span: Span


@dataclass(frozen=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ^
    left: object
    right: object
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: object
    span: Span


@dataclass(frozen=True)
class Ddt:
    operand: object
    span: Span


# ---------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Definition:
    """`name(args) = body` (args is None for a constant `name = body`, and for params)."""

    name: str
    args: tuple[str, ...] | None
    body: object
    text: str  # the body exactly as written
    span: Span  # the statement's name


@dataclass(frozen=True)
class PriorStmt:
    kind: str
    kwargs: tuple[tuple[str, object, str], ...]  # (name, expr, text)
    span: Span


@dataclass(frozen=True)
class RunEntry:
    key: str
    value: object  # python data: str, float, int, bool, list, or RCall / RSum
    text: str
    span: Span


@dataclass(frozen=True)
class RCall:
    name: str
    kwargs: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class SpecSyntax:
    name: str
    extends: tuple[str, Span] | None
    description: str
    params: tuple[Definition, ...]
    definitions: tuple[Definition, ...]
    prior: PriorStmt | None
    run: tuple[RunEntry, ...]
    file: str
    span: Span


# ---------------------------------------------------------------------------------------
# .dfs


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("dfc.grammar").joinpath("dfs.lark").read_text()
    return Lark(grammar, parser="lalr", start=["start", "expr", "rvalue", "prior_body"], propagate_positions=True)


def _number(text: str) -> float | int:
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)


class _ToSyntax(Transformer):
    """Lark tree -> syntax dataclasses. `src` is the whole file text (for spans and slices)."""

    def __init__(self, src: str, file: str, line_offset: int = 0, col_offset: int = 0):
        super().__init__()
        self.src, self.file = src, file
        self.lines = src.splitlines()
        self.line_offset, self.col_offset = line_offset, col_offset

    # -- helpers
    def _span(self, item, length: int | None = None) -> Span:
        meta = item if isinstance(item, Token) else getattr(item, "meta", item)
        line, col = meta.line, meta.column
        if length is None:
            end = getattr(meta, "end_pos", None)
            start = getattr(meta, "start_pos", None)
            length = (end - start) if (end is not None and start is not None) else 1
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if line == 1:
            col += self.col_offset
            text = " " * self.col_offset + text
        return Span(self.file, line + self.line_offset, col, text, max(1, length))

    def _slice(self, meta) -> str:
        return self.src[meta.start_pos : meta.end_pos]

    # -- expressions
    @v_args(meta=True)
    def number(self, meta, items):
        return Num(str(items[0]), self._span(meta))

    @v_args(meta=True)
    def var(self, meta, items):
        return Var(str(items[0]), self._span(items[0]))

    @v_args(meta=True)
    def call(self, meta, items):
        name, *args = items
        args = tuple(a for a in args if a is not None)
        return Call(str(name), args, self._span(name))

    @v_args(meta=True)
    def ddt(self, meta, items):
        return Ddt(items[1], self._span(items[0]))

    def _bin(op):  # noqa: N805 - a small factory used in the class body
        @v_args(meta=True)
        def build(self, meta, items):
            return BinOp(op, items[0], items[1], self._span(meta))

        return build

    add, sub, mul, div, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("^")

    @v_args(meta=True)
    def neg(self, meta, items):
        return Neg(items[0], self._span(meta))

    # -- run values: plain python data
    def rname(self, items):
        text = str(items[0])
        return {"true": True, "false": False}.get(text, text)

    @v_args(meta=True)
    def rnumber(self, meta, items):
        text = str(items[0])
        if len(text) > MAX_LITERAL_CHARS:
            raise LimitError(f"the number {text[:20]}... has {len(text)} characters; dfc reads numbers of at most "
                             f"{MAX_LITERAL_CHARS}.", self._span(meta), "Write it with an exponent, e.g. 1e6.")
        return _number(text)

    def rstring(self, items):
        return str(items[0])[1:-1]

    def rlist(self, items):
        return [i for i in items if i is not None]

    def rkw(self, items):
        return (str(items[0]), items[1])

    def rcall(self, items):
        name, *kws = items
        return RCall(str(name), tuple(k for k in kws if k is not None))

    def rsum(self, items):
        return items[0] if len(items) == 1 else tuple(items)


class _Statements(_ToSyntax):
    """Statement-level callbacks for .dfs files."""

    @v_args(meta=True)
    def param(self, meta, items):
        d = Definition(str(items[0]), None, items[1], body_text(self, meta), self._span(items[0]))
        self._params.add(d)
        return d

    @v_args(meta=True)
    def definition(self, meta, items):
        name, *rest = items
        body = rest[-1]
        args = tuple(str(a) for a in rest[:-1] if a is not None)
        return Definition(str(name), args, body, body_text(self, meta), self._span(name))

    @v_args(meta=True)
    def constant(self, meta, items):
        name, body = items
        return Definition(str(name), None, body, body_text(self, meta), self._span(name))

    @v_args(meta=True)
    def kwarg(self, meta, items):
        name, body = items
        return (str(name), body, body_text(self, meta))

    @v_args(meta=True)
    def prior_body(self, meta, items):
        kind, *kws = items
        return PriorStmt(str(kind), tuple(k for k in kws if k is not None), self._span(kind))

    def prior(self, items):
        return items[0]

    @v_args(meta=True)
    def entry(self, meta, items):
        key, value = items
        return RunEntry(str(key), value, body_text(self, meta), self._span(key))

    def run(self, items):
        return ("run", tuple(items))

    def extends(self, items):
        return ("extends", (str(items[0]), self._span(items[0])))

    @v_args(meta=True)
    def spec(self, meta, items):
        name, *rest = items
        extends, description = None, ""
        params, defs, prior, run = [], [], None, []
        for item in rest:
            if isinstance(item, Token):  # the description string
                description = str(item)[1:-1]
            elif isinstance(item, tuple) and item[0] == "extends":
                extends = item[1]
            elif isinstance(item, tuple) and item[0] == "run":
                run.extend(item[1])
            elif isinstance(item, PriorStmt):
                if prior is not None:
                    raise SpecSyntaxError("a spec has one `prior` statement; this is a second one.", item.span)
                prior = item
            elif isinstance(item, Definition) and item in self._params:
                params.append(item)
            else:
                defs.append(item)
        return SpecSyntax(str(name), extends, description, tuple(params), tuple(defs), prior,
                          tuple(run), self.file, self._span(name))

    def start(self, items):
        return items[0]

    def transform(self, tree):
        # params are told apart from constants by the tree node, recorded before transforming
        self._params = set()
        return super().transform(tree)


def body_text(tx: _ToSyntax, meta) -> str:
    """The text after the first '=' of a statement: the expression as written."""
    text = tx._slice(meta)
    return text.split("=", 1)[1].strip() if "=" in text else text.strip()


def _syntax_error(exc: LarkError, src: str, file: str, line_offset=0, col_offset=0) -> SpecSyntaxError:
    if isinstance(exc, UnexpectedInput):
        line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
        if isinstance(exc, UnexpectedEOF) or line < 1:
            lines = src.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
            what = "the text ends too early"
        elif isinstance(exc, UnexpectedCharacters):
            what = f"unexpected character {src[exc.pos_in_stream]!r}"
        else:
            tok = getattr(exc, "token", None)
            what = f"unexpected {str(tok)!r}" if tok is not None and str(tok) else "unexpected input"
            if tok is not None and tok.type == "$END":  # e.g. a spec without its `end`
                lines = src.splitlines() or [""]
                line, col = len(lines), len(lines[-1]) + 1
                what = "the text ends too early"
        expected = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
        shown = ", ".join(_pretty_terminal(e) for e in expected[:8])
        hint = f"Expected one of: {shown}." if shown else None
        misspelt = _misspelt_keyword(src, line, col)
        if misspelt is not None:  # `parm kappa = 0.5`: the first word is the mistake, not the second
            col, word, keyword = misspelt
            what, hint = f"{what} after {word!r}", f"Did you mean {keyword!r}?"
        span = span_from_text(file, src, line, col)
        if line == 1 and col_offset:
            span = Span(file, line + line_offset, col + col_offset, " " * col_offset + span.text)
        elif line_offset:
            span = Span(file, line + line_offset, col, span.text)
        return SpecSyntaxError(f"syntax error: {what}.", span, hint)
    return SpecSyntaxError(f"syntax error: {exc}.", Span(file, 1, 1))


@lru_cache(maxsize=1)
def keywords() -> tuple[str, ...]:
    """The grammar's keywords (`spec`, `extends`, `param`, `prior`, `run`, `end`): its literal words."""
    return tuple(sorted(t.pattern.value for t in _parser().terminals
                        if t.pattern.type == "str" and t.pattern.value.isalpha()))


def _misspelt_keyword(src: str, line: int, col: int) -> tuple[int, str, str] | None:
    """(column, word, keyword) when the error is at the second word of a line whose first word is a bare
    name close to a statement keyword (`parm kappa = 0.5`, `rum steps = 8`), or at the end of a text
    whose last line is one word close to `end` (`edn`)."""
    import difflib

    lines = src.splitlines()
    if not 1 <= line <= len(lines):
        return None
    words = list(re.finditer(r"\S+", lines[line - 1]))
    if not words or words[0].group() in keywords() or not re.fullmatch(r"[A-Za-z_]\w*", words[0].group()):
        return None
    if len(words) == 1 and line == len(lines) and col == len(lines[-1]) + 1:
        known = ("end",)
    elif len(words) >= 2 and words[1].start() + 1 == col and words[1].group()[0] not in "=(":
        known = keywords()  # (`t_end = 1`, `send(t) = t` are statements of their own: the error is elsewhere)
    else:
        return None
    close = difflib.get_close_matches(words[0].group(), known, n=1, cutoff=0.6)
    return (words[0].start() + 1, words[0].group(), close[0]) if close else None


_TERMINALS = {"NAME": "a name", "NUMBER": "a number", "SIGNED_NUMBER": "a number", "STRING": "a \"string\"",
              "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='", "COMMA": "','", "PLUS": "'+'", "MINUS": "'-'",
              "STAR": "'*'", "SLASH": "'/'", "CIRCUMFLEX": "'^'", "LSQB": "'['", "RSQB": "']'",
              "DDT": "d/dt(...)", "$END": "end of text"}


def _pretty_terminal(name: str) -> str:
    if name in _TERMINALS:
        return _TERMINALS[name]
    return f"'{name.lower()}'" if name.isupper() else name


def check_size(tree, src: str, file: str, line_offset: int = 0, col_offset: int = 0) -> None:
    """Refuse a parse tree nested deeper than MAX_DEPTH or larger than MAX_NODES, at the first place
    beyond the limit (an iterative walk: nothing here recurses)."""
    from lark import Tree

    nodes = 0
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        over_depth = depth > MAX_DEPTH
        if over_depth or nodes > MAX_NODES:
            meta = getattr(node, "meta", None)
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            span = span_from_text(file, src, line, col)
            if line == 1 and col_offset:
                span = Span(file, line + line_offset, col + col_offset, " " * col_offset + span.text)
            elif line_offset:
                span = Span(file, line + line_offset, col, span.text)
            if over_depth:
                raise LimitError(f"the expression nests more than {MAX_DEPTH} levels deep here (each operator, "
                                 f"unary minus, call and bracket of a list is a level; a chain of N additions is N "
                                 f"levels); dfc accepts at most {MAX_DEPTH}.", span,
                                 "Split it into named definitions, or group a long sum with parentheses.")
            raise LimitError(f"the text has more than {MAX_NODES} operators, numbers and names; dfc accepts at most "
                             f"{MAX_NODES} in one spec or expression.", span, "Write a smaller spec.")
        for c in getattr(node, "children", ()):
            if isinstance(c, Tree):
                stack.append((c, depth + 1))


def _transform(tx: "_ToSyntax", tree):
    try:
        return tx.transform(tree)
    except Exception as exc:  # lark wraps errors raised in callbacks
        inner = getattr(exc, "orig_exc", exc)
        if isinstance(inner, DfcError):
            raise inner from None
        raise


def parse_dfs(src: str, file: str = "<spec>") -> SpecSyntax:
    try:
        tree = _parser().parse(src, start="start")
    except LarkError as exc:
        raise _syntax_error(exc, src, file) from None
    check_size(tree, src, file)
    return _transform(_Statements(src, file), tree)


def parse_expr(text: str, file: str = "<expr>", line: int = 1, column: int = 1) -> tuple[object, str]:
    """Parse one expression (a YAML value, a --set value). Returns (syntax tree, text)."""
    text = str(text)
    try:
        tree = _parser().parse(text, start="expr")
    except LarkError as exc:
        raise _syntax_error(exc, text, file, line - 1, column - 1) from None
    check_size(tree, text, file, line - 1, column - 1)
    return _transform(_ToSyntax(text, file, line - 1, column - 1), tree), text.strip()


def parse_run_value(text: str, file: str = "<option>", line: int = 1, column: int = 1) -> object:
    """Parse a run-block value given on the command line (`--target ring8`, `--fields exact+kde`)."""
    text = str(text)
    try:
        tree = _parser().parse(text, start="rvalue")
    except LarkError as exc:
        raise _syntax_error(exc, text, file, line - 1, column - 1) from None
    check_size(tree, text, file, line - 1, column - 1)
    return _transform(_ToSyntax(text, file, line - 1, column - 1), tree)


_YAML_OPEN = ("BlockMappingStartToken", "BlockSequenceStartToken", "FlowMappingStartToken", "FlowSequenceStartToken")
_YAML_CLOSE = ("BlockEndToken", "FlowMappingEndToken", "FlowSequenceEndToken")


def _yaml_depth(src: str, file: str) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH before composing it (PyYAML's composer recurses)."""
    depth = 0
    try:
        for tok in yaml.scan(src):
            name = type(tok).__name__
            if name in _YAML_OPEN:
                depth += 1
                if depth > MAX_DEPTH:
                    m = tok.start_mark
                    raise LimitError(f"the YAML nests more than {MAX_DEPTH} levels deep here; dfc accepts at most "
                                     f"{MAX_DEPTH}.", span_from_text(file, src, m.line + 1, m.column + 1),
                                     "A spec's YAML is a mapping of short values: flatten the lists.")
            elif name in _YAML_CLOSE:
                depth -= 1
    except yaml.YAMLError:
        return  # yaml.compose reports it, with its place


# ---------------------------------------------------------------------------------------
# YAML twin
#
#   spec: diffusion_gan
#   extends: ve_sde
#   description: ...
#   params: {kappa: 0.5}
#   define:                      # the six functions and local definitions, `lhs: expr`
#     beta(t): g2(t)/2 + kappa*lambda2(t)
#   prior: normal(scale = 80)
#   run: {target: ring8, fields: exact + kde, steps: 32}

_LHS = re.compile(r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*(?:\(\s*([A-Za-z_0-9,\s]*)\)\s*)?$")
_YAML_KEYS = ("spec", "extends", "description", "params", "define", "prior", "run")


def _node_span(file: str, src: str, node) -> Span:
    mark = node.start_mark
    return span_from_text(file, src, mark.line + 1, mark.column + 1)


def _scalar(node, file, src, what) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecSyntaxError(f"{what} must be a single value, not a list or mapping.", _node_span(file, src, node))
    return node.value


def _value_text(node, file, src, what) -> tuple[str, int, int]:
    text = _scalar(node, file, src, what)
    mark = node.start_mark
    col = mark.column + 1 + (1 if node.style in ("'", '"') else 0)
    return text, mark.line + 1, col


def _yaml_to_run_value(node, file, src):
    if isinstance(node, yaml.SequenceNode):
        return [_yaml_to_run_value(n, file, src) for n in node.value]
    if isinstance(node, yaml.MappingNode):
        raise SpecSyntaxError("a run value is a name, number, string, list or call such as kde(h = 0.1).",
                              _node_span(file, src, node))
    text, line, col = _value_text(node, file, src, "a run value")
    if text.endswith(".npy"):  # a file name, written without quotes in YAML
        return text
    return parse_run_value(text, file, line, col)


def parse_yaml(src: str, file: str = "<spec>") -> SpecSyntax:
    _yaml_depth(src, file)
    try:
        root = yaml.compose(src)  # nodes with positions; constructs no python objects
    except RecursionError:
        raise LimitError("the YAML nests too deeply.", Span(file, 1, 1), "Flatten the lists.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        span = span_from_text(file, src, mark.line + 1, mark.column + 1) if mark else Span(file, 1, 1)
        raise SpecSyntaxError(f"YAML syntax error: {getattr(exc, 'problem', exc)}.", span) from None
    if not isinstance(root, yaml.MappingNode):
        raise SpecSyntaxError("a YAML spec is a mapping with keys spec, extends, description, params, define, "
                              "prior, run.", Span(file, 1, 1))
    fields: dict[str, tuple] = {}
    for key_node, value_node in root.value:
        key = key_node.value
        if key not in _YAML_KEYS:
            raise SpecSyntaxError(f"unknown key {key!r} in a YAML spec.", _node_span(file, src, key_node),
                                  f"Use one of: {', '.join(_YAML_KEYS)}.")
        fields[key] = (key_node, value_node)
    if "spec" not in fields:
        raise SpecSyntaxError("a YAML spec needs `spec: NAME`.", Span(file, 1, 1))
    name_node = fields["spec"][1]
    name = _scalar(name_node, file, src, "spec")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name):
        raise SpecSyntaxError(f"spec name {name!r} is not a name (letters, digits, _).", _node_span(file, src, name_node))
    extends = None
    if "extends" in fields:
        node = fields["extends"][1]
        extends = (_scalar(node, file, src, "extends"), _node_span(file, src, node))
    description = _scalar(fields["description"][1], file, src, "description") if "description" in fields else ""

    def mapping(key):
        if key not in fields:
            return []
        node = fields[key][1]
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return []
        if not isinstance(node, yaml.MappingNode):
            raise SpecSyntaxError(f"`{key}` must be a mapping.", _node_span(file, src, node))
        return node.value

    params = []
    for k, v in mapping("params"):
        text, line, col = _value_text(v, file, src, f"param {k.value}")
        body, text = parse_expr(text, file, line, col)
        params.append(Definition(k.value, None, body, text, _node_span(file, src, k)))
    defs = []
    for k, v in mapping("define"):
        m = _LHS.match(k.value)
        if not m:
            raise SpecSyntaxError(f"{k.value!r} is not a definition head such as sigma(t) or alpha(s).",
                                  _node_span(file, src, k))
        args = None if m.group(2) is None else tuple(a.strip() for a in m.group(2).split(",") if a.strip())
        text, line, col = _value_text(v, file, src, k.value)
        body, text = parse_expr(text, file, line, col)
        defs.append(Definition(m.group(1), args, body, text, _node_span(file, src, k)))
    prior = None
    if "prior" in fields:
        node = fields["prior"][1]
        text, line, col = _value_text(node, file, src, "prior")
        try:
            tree = _parser().parse(text, start="prior_body")
        except LarkError as exc:
            raise _syntax_error(exc, text, file, line - 1, col - 1) from None
        stmts = _Statements(text, file, line - 1, col - 1)
        stmts._params = set()
        prior = stmts.transform(tree)
    run = []
    for k, v in mapping("run"):
        value = _yaml_to_run_value(v, file, src)
        run.append(RunEntry(k.value, value, _run_text(value), _node_span(file, src, k)))
    return SpecSyntax(name, extends, description, tuple(params), tuple(defs), prior, tuple(run), file,
                      _node_span(file, src, name_node))


def _run_text(value) -> str:
    """Print a run value back in the language's own syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", value) else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_run_text(v) for v in value) + "]"
    if isinstance(value, RCall):
        return f"{value.name}(" + ", ".join(f"{k} = {_run_text(v)}" for k, v in value.kwargs) + ")"
    if isinstance(value, tuple):
        return " + ".join(_run_text(v) for v in value)
    raise TypeError(value)


run_text = _run_text


def read_spec_file(path: str | Path) -> SpecSyntax:
    path = Path(path)
    try:
        st = path.stat()
        if path.exists() and not path.is_dir() and not path.is_file():
            raise SpecSyntaxError(f"spec file {str(path)!r} is not a regular file (a device, a pipe?).", None,
                                  "Give the path of a .dfs or .yaml file.")
        if st.st_size > MAX_SPEC_BYTES:
            raise LimitError(f"spec file {str(path)!r} has {st.st_size:,} bytes; dfc reads spec files of at most "
                             f"{MAX_SPEC_BYTES:,} bytes.", None, "A spec is a short text: write a smaller one.")
        src = path.read_text()
    except FileNotFoundError:
        raise SpecSyntaxError(f"no spec file {str(path)!r}.", None,
                              "Give the path of a .dfs or .yaml file, or a preset name such as ve_sde.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecSyntaxError(f"cannot read spec file {str(path)!r}: {exc}.") from None
    if path.suffix in (".yaml", ".yml"):
        return parse_yaml(src, str(path))
    return parse_dfs(src, str(path))
