"""What the benchmark scripts share: their command-line numbers, and `--from-csv` (a report written
again from the last run's CSV, nothing run)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def whole_numbers(least: int = 0):
    """argparse type of `--seeds 2,3,4` (least 0) or `--sizes 2000,20000` (least 2: one particle has no spread):
    whole numbers ≥ `least`, comma separated; anything else is argparse's one-line usage error (exit 2), not a
    traceback."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers >= {least}")
        return values

    return parse


def particle_count(text: str) -> int:
    """argparse type of one particle count, a whole number ≥ 2."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a particle count (a whole number >= 2)")
    return n


WALL_LINE = "Total wall time"


def previous_run(out: Path, stem: str) -> tuple[pd.DataFrame, str]:
    """For `--from-csv`: OUT/<stem>.csv as the last run of benchmarks/<stem>.py wrote it, and that run's
    "Total wall time" line from OUT/<stem>.md (or a line saying it was not recorded). A missing CSV
    ends the script with one line naming it (exit 1), before anything is written."""
    csv = out / f"{stem}.csv"
    if not csv.is_file():
        raise SystemExit(f"--from-csv: {csv} does not exist; run `python benchmarks/{stem}.py` first (it writes "
                         f"that file).")
    md = out / f"{stem}.md"
    lines = md.read_text().splitlines() if md.exists() else []
    return pd.read_csv(csv), next((line for line in lines if line.startswith(WALL_LINE)),
                                  f"{WALL_LINE}: not recorded.")
