"""What every `dfc` command shares: the consoles, NAME=VALUE options, and the error guard.

A command body runs inside `guard`: a DfcError is printed as its one paragraph (place, message,
fix) with exit code 2 and no traceback; Ctrl-C exits with 130 after saying what was kept.
"""

from __future__ import annotations

import typer
from rich.console import Console

from dfc.errors import ConfigError, DfcError

out_console = Console()
err_console = Console(stderr=True)

THREADS_HELP = "torch threads (default: one for small work, every core for large; see dfc/threads.py)."

KEPT = "interrupted; files already written are complete, nothing was half-written."


def pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """`--set kappa=0.5 --set eta=1` as {"kappa": "0.5", "eta": "1"}; anything else is a ConfigError."""
    out = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise ConfigError(f"{option} {item!r} is not NAME=VALUE.", None, f"Write e.g. {option} kappa=0.5.")
        out[k.strip()] = v.strip()
    return out


def guard(fn, interrupted: str = KEPT):
    """Run a command body; a DfcError becomes its message and exit code 2, Ctrl-C exit code 130."""
    try:
        return fn()
    except DfcError as exc:
        err_console.print(exc.render(), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(interrupted, highlight=False)
        raise typer.Exit(130) from None
