"""The benchmark scripts' own inputs (benchmarks/reporting.py): bad numbers are argparse's one-line
usage error, and --from-csv without a CSV names it and writes nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reporting import particle_count, previous_run, whole_numbers  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench-script")
    ap.add_argument("--seeds", type=whole_numbers())
    ap.add_argument("--sizes", type=whole_numbers(2))
    ap.add_argument("--n", type=particle_count)
    return ap


def test_numbers_parse_and_bad_ones_are_a_usage_error(capsys):
    args = parser().parse_args(["--seeds", "0,3", "--sizes", "2,2000", "--n", "100000"])
    assert (args.seeds, args.sizes, args.n) == ([0, 3], [2, 2000], 100_000)
    for option, bad in (("--seeds", "x"), ("--seeds", ""), ("--seeds", "2,,3"), ("--seeds", "-1"),
                        ("--sizes", "1000,1"), ("--n", "1"), ("--n", "5,6"), ("--n", "1e5")):
        with pytest.raises(SystemExit) as exc:
            parser().parse_args([option, bad])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"argument {option}: {bad!r} is not" in err and "Traceback" not in err


def test_from_csv_needs_the_csv_and_keeps_the_run_s_wall_time(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(SystemExit, match=r"particles.csv does not exist; run `python benchmarks/particles.py`"):
        previous_run(out, "particles")
    assert not out.exists()  # nothing written before the error
    out.mkdir()
    pd.DataFrame({"n": [2000]}).to_csv(out / "particles.csv", index=False)
    df, wall = previous_run(out, "particles")
    assert list(df["n"]) == [2000] and wall == "Total wall time: not recorded."
    (out / "particles.md").write_text("# report\n\nTotal wall time 224 s, --jobs 2.\n")
    assert previous_run(out, "particles")[1] == "Total wall time 224 s, --jobs 2."
