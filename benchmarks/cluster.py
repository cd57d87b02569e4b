"""Where bench cells run: a suite through `--executor local --jobs 1`, `local --jobs 2` and
`dask` (a LocalCluster of 2 workers), measured in one run.

Two measurements per executor, each with a fresh cache:

- the suite (`--suite quick`, the default: `dfc bench --quick`'s cells; `--suite default`: `dfc bench
  --all`'s, about 45 minutes for the serial run alone; through dfc.bench.run_cells as the CLI runs them):
  wall time, including starting the executor (the process pool's spawn, the LocalCluster), and
  the overhead per cell, (workers × wall − serial wall) / cells: what the cells cost beyond their
  own work, the serial in-process run being (almost) pure work;
- tiny cells (ve_ode, 1 NFE, 10 particles: a few milliseconds of work each) through an executor
  that is already running and warmed up: seconds per cell, i.e. the cost of dispatching a cell
  and returning its row.

    python benchmarks/cluster.py                   # writes benchmarks/results/cluster.md
    python benchmarks/cluster.py --suite default   # writes benchmarks/results/cluster-default.md

The default suite takes about 1 h 40 min for the three executors; each executor's measurement is kept
in `cluster[-SUITE].json` as soon as it is made, and `--executors dask:2,local:1` measures only
those (the report says when each row was measured, and the load at the time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EXECUTORS = (("local", 2), ("dask", 2), ("local", 1))  # the serial run last: the others compare with it
TIMINGS = ("wall_s", "cpu_s", "estimator_s")  # the fields of a row that are measured, not computed




def suite_wall(executor: str, jobs: int, cells: list, folder: Path) -> tuple[float, float, str]:
    """Seconds to run `cells` from an empty cache, starting the executor included; the CPU seconds their
    samplers report (summed over cells); and a digest of their rows, timings aside."""
    from dfc.bench import run_cells

    every = max(1, len(cells) // 20)

    def progress(done: int, total: int, label: str) -> None:
        if done % every == 0 or done == total:
            print(f"  {executor} {jobs}: {done}/{total} cells, {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    records = run_cells(cells, folder / f"{executor}-{jobs}", jobs, progress=progress, executor=executor)
    wall = time.perf_counter() - start
    bad = [r for r in records if r.get("crashed")]
    if bad:
        sys.exit(f"{len(bad)} cells crashed with --executor {executor}: {bad[0]['error']}")
    return wall, sum(float(r.get("cpu_s") or 0.0) for r in records), rows_digest(records)


def rows_digest(records: list) -> str:
    """Of the rows as the cache stores them (JSON), so that a cache folder's rows give the same digest."""
    records = json.loads(json.dumps(records, default=str))
    rows = [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]
    return hashlib.sha1(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tiny_cells(n: int, offset: int = 0) -> list:
    from dfc.bench import Cell, spec_source

    source = spec_source("ve_ode")
    return [Cell("spec", "ve_ode", "ring8", 1, offset + i, 10, (), source) for i in range(n)]


def dispatch_cost(executor: str, jobs: int, n: int) -> float:
    """Seconds per tiny cell through a running, warmed-up executor (no cache involved)."""
    from dfc.executors import runner

    with runner(executor, jobs) as run:
        list(run(tiny_cells(2 * jobs, offset=10_000)))  # every worker has imported dfc and torch
        start = time.perf_counter()
        done = list(run(tiny_cells(n)))
        wall = time.perf_counter() - start
    assert len(done) == n
    return wall / n


def parse_executors(text: str) -> list[tuple[str, int]]:
    """`local:2,dask:2,local:1` -> [(local, 2), (dask, 2), (local, 1)]; anything else exits with a message."""
    out = []
    for item in text.split(","):
        name, _, jobs = item.strip().partition(":")
        if (name, int(jobs) if jobs.isdigit() else None) not in EXECUTORS:
            sys.exit(f"--executors {text!r}: {item.strip()!r} is not one of "
                     f"{', '.join(f'{e}:{j}' for e, j in EXECUTORS)}; write e.g. --executors dask:2,local:1.")
        out.append((name, int(jobs)))
    return out


def main() -> None:
    from dfc.bench import load_suite, suite_cells, without_missing_peers
    from dfc.io import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick", help="quick (the default) or default (dfc bench --all's suite)")
    ap.add_argument("--executors", default=",".join(f"{e}:{j}" for e, j in EXECUTORS),
                    help="which to measure now (the others are read back from the last run's JSON)")
    ap.add_argument("--tiny", type=int, default=200, help="tiny cells per executor")
    args = ap.parse_args()
    suite, skipped = without_missing_peers(load_suite(args.suite))
    for message in skipped:  # their cells would fail on every executor alike
        print(message, flush=True)
    cells = suite_cells(suite)
    store = RESULTS / ("cluster.json" if args.suite == "quick" else f"cluster-{args.suite}.json")
    known = json.loads(store.read_text()) if store.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        for executor, jobs in parse_executors(args.executors):
            began, load = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.getloadavg()[0]
            wall, cpu, digest = suite_wall(executor, jobs, cells, Path(folder))
            tiny = dispatch_cost(executor, jobs, args.tiny)
            known[f"{executor}:{jobs}"] = {"wall_s": wall, "cells_cpu_s": cpu, "tiny_s": tiny, "rows": digest,
                                           "cells": len(cells), "began": began,
                                           "load": [round(load, 1), round(os.getloadavg()[0], 1)]}
            print(executor, jobs, f"{wall:.1f} s, {tiny * 1e3:.1f} ms/tiny cell", flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            atomic_write_json(store, known)  # a long suite: each executor's row is kept as soon as it is measured
    missing = [f"{e}:{j}" for e, j in EXECUTORS if f"{e}:{j}" not in known]
    if missing:
        sys.exit(f"measured; still missing for the report: {', '.join(missing)} (--executors {','.join(missing)})")
    report(args.suite, known, atomic_write_text)


def report(suite: str, known: dict, write) -> None:
    m = {(e, j): known[f"{e}:{j}"] for e, j in EXECUTORS}
    serial = m["local", 1]["wall_s"]
    tiny = m["local", 1]["tiny_s"]  # a tiny cell's own work, in this process
    cells = m["local", 1]["cells"]
    same = len({v["rows"] for v in m.values()}) == 1 and len({v["cells"] for v in m.values()}) == 1
    command = "python benchmarks/cluster.py" + ("" if suite == "quick" else f" --suite {suite}")
    lines = [f"# Benchmark cells: local processes against a Dask LocalCluster ({suite} suite)", "",
             f"`{command}` on {os.cpu_count()} cores, each executor from an empty cache (when each row was measured, "
             f"and the load average at its start and end, are in the last columns: compare rows measured on an "
             f"equally loaded machine). The {suite} suite is {cells} cells, {serial / cells:.2f} s of work each on "
             f"average (the serial run); `overhead per cell` is (workers × wall − serial wall) / cells, what a cell "
             f"costs beyond its own work, starting the executor included; `samplers' CPU s` is the CPU time the cells' "
             f"samplers report, summed (the same work everywhere, so it should agree across executors). Tiny cells "
             f"(ve_ode, 1 NFE, 10 particles: {tiny * 1e3:.0f} ms of work each, mostly compiling the spec and the "
             f"metrics) go through an executor that is already running; `dispatch per cell` is workers × (wall per "
             f"tiny cell) − {tiny * 1e3:.0f} ms, the cost of sending a cell and returning its row. Rows (timings "
             f"aside) identical across the three executors: {'yes' if same else 'NO'}.", "",
             f"| executor | workers | {suite} suite wall s | × serial | overhead per cell s | samplers' CPU s | "
             f"tiny cell wall ms | dispatch per cell ms | measured (UTC) | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (executor, jobs), v in m.items():
        overhead = (jobs * v["wall_s"] - serial) / cells
        lines.append(f"| {executor} | {jobs} | {v['wall_s']:.1f} | {v['wall_s'] / serial:.2f} | {overhead:.3f} | "
                     f"{v['cells_cpu_s']:.1f} | {v['tiny_s'] * 1e3:.1f} | {(jobs * v['tiny_s'] - tiny) * 1e3:.0f} | "
                     f"{v['began']} | {v['load'][0]} → {v['load'][1]} |")
    lines += ["", f"Dask against the local pool at 2 workers: {m['dask', 2]['wall_s'] / m['local', 2]['wall_s']:.2f}× "
                  f"the wall time of the {suite} suite, {m['dask', 2]['tiny_s'] / m['local', 2]['tiny_s']:.2f}× the "
                  f"wall time per tiny cell. The overhead is per cell (and, starting the cluster, per run), not per "
                  f"unit of work: its share shrinks as cells grow, and the {suite} suite's cells take "
                  f"{serial / cells:.2f} s each on average; a cluster pays off when it adds cores, not on the cores "
                  f"the local pool already uses."]
    name = "cluster.md" if suite == "quick" else f"cluster-{suite}.md"
    write(RESULTS / name, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
