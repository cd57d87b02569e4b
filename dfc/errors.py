"""Errors a user sees: one paragraph naming the place and the fix, never a traceback.

Every error dfc raises on purpose is a `DfcError`. Errors that come from a spec carry a
`Span` (file, line, column, the source line) so the message can point at the text with a
caret, like a compiler does.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A place in a source file: 1-based line and column, plus the line's text."""

    file: str
    line: int
    column: int
    text: str = ""  # the whole source line, for the caret display
    length: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def caret(self) -> str:
        if not self.text:
            return ""
        line = self.text.rstrip("\n").expandtabs(1)
        col = self.column
        width = max(1, min(self.length, len(line) - col + 1, 60))
        if len(line) > 120:  # a long line: a window around the place
            lo = max(0, col - 1 - 50)
            hi = min(len(line), col - 1 + width + 50)
            line = ("..." if lo else "") + line[lo:hi] + ("..." if hi < len(line) else "")
            col = col - lo + (3 if lo else 0)
        return f"    {line}\n    {' ' * (col - 1)}{'^' * width}"


def span_from_text(file: str, text: str, line: int, column: int, length: int = 1) -> Span:
    lines = text.splitlines()
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    return Span(file, line, column, src, length)


class DfcError(Exception):
    """An error with a message meant for a person. `span` locates it in a spec, if known."""

    exit_code = 2

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def render(self) -> str:
        head = f"{self.span}: " if self.span else ""
        out = f"error: {head}{self.message}"
        if self.hint:
            out += f" {self.hint}"
        if self.span is not None and self.span.caret():
            out += "\n" + self.span.caret()
        return out

    def __str__(self) -> str:  # pragma: no cover - used by pytest output
        return self.render()


class SpecSyntaxError(DfcError):
    """The text of a spec does not follow the grammar."""


class SpecNameError(DfcError):
    """An unknown name, function, parameter or spec, or a wrong number of arguments."""


class SpecCycleError(DfcError):
    """Definitions or `extends` that refer to themselves."""


class IllPosedError(DfcError):
    """The SDE is not well posed on the time interval (noise² < 0, β < 0, u ≤ 0, ...)."""


class ConfigError(DfcError):
    """A bad run setting or command-line option (`--set`, `--target`, `--solver`, ...)."""


class DataError(DfcError):
    """Bad input data: wrong shape, NaNs, a corrupt or mismatched file."""


class OutputError(DataError):
    """An output cannot be written: no permission, a read-only file system, a full disk, a place where
    no file can be (under /proc, say), or a folder dfc would not replace. Nothing was half-written."""


class NumericalError(DfcError):
    """The simulation produced non-finite values, or particles far beyond the problem's scale."""


class SpecValueError(DfcError):
    """A constant in a spec (a param, a literal, a constant sub-expression) is not a finite real number."""


class LimitError(DfcError):
    """An input beyond one of dfc's stated limits (expression size or nesting, exponents, particles,
    steps, file sizes, memory): refused before the work starts."""


class CellsFailed(DfcError):
    """Benchmark cells that did not finish (a crash, a lost worker): the rest of the run is written,
    and the command exits 1 so that a script or a scheduler sees it."""

    exit_code = 1


RECURSION_LIMIT = 6000  # while a spec is parsed and compiled (its nesting is bounded by dfc.syntax.MAX_DEPTH)


@contextmanager
def deep_work(span: Span | None, what: str = "the spec"):
    """Room for the recursion a nested (but size-checked) spec needs; a RecursionError that still
    happens is reported as a LimitError at `span` instead of a traceback (the last resort)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, RECURSION_LIMIT))
    try:
        yield
    except RecursionError:
        raise LimitError(f"{what} is nested too deeply for dfc to process.", span,
                         "Split deep expressions into named definitions.") from None
    finally:
        sys.setrecursionlimit(old)
