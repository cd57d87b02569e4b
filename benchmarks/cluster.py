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
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EXECUTORS = (("local", 2), ("dask", 2), ("local", 1))  # the serial run last: the others compare with it
TIMINGS = ("wall_s", "cpu_s", "estimator_s")  # the fields of a row that are measured, not computed


def _rows(records: list) -> list:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def suite_wall(executor: str, jobs: int, cells: list, folder: Path) -> tuple[float, list]:
    """Seconds to run `cells` from an empty cache, starting the executor included, and their rows."""
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
    return wall, _rows(records)


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


def main() -> None:
    from dfc.bench import load_suite, suite_cells
    from dfc.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick", help="quick (the default) or default (dfc bench --all's suite)")
    ap.add_argument("--tiny", type=int, default=200, help="tiny cells per executor")
    args = ap.parse_args()
    cells = suite_cells(load_suite(args.suite))
    before = os.getloadavg()[0]
    walls, per_cell, rows = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for executor, jobs in EXECUTORS:
            walls[executor, jobs], rows[executor, jobs] = suite_wall(executor, jobs, cells, Path(folder))
            per_cell[executor, jobs] = dispatch_cost(executor, jobs, args.tiny)
            print(executor, jobs, f"{walls[executor, jobs]:.1f} s, {per_cell[executor, jobs] * 1e3:.1f} ms/tiny cell",
                  flush=True)
    serial = walls["local", 1]
    after = os.getloadavg()[0]
    tiny = per_cell["local", 1]  # a tiny cell's own work, in this process
    same = all(rows[e] == rows["local", 1] for e in EXECUTORS)
    command = "python benchmarks/cluster.py" + ("" if args.suite == "quick" else f" --suite {args.suite}")
    lines = [f"# Benchmark cells: local processes against a Dask LocalCluster ({args.suite} suite)", "",
             f"`{command}` on {os.cpu_count()} cores (load average {before:.1f} at the start, "
             f"{after:.1f} at the end; the rows are measured one after the other in this one run, so compare them "
             f"with each other). The {args.suite} suite is {len(cells)} cells, {serial / len(cells):.2f} s of work each on average (the serial run); "
             f"`overhead per cell` is (workers × wall − serial wall) / cells, what a cell costs beyond its own "
             f"work, starting the executor included. Tiny cells (ve_ode, 1 NFE, 10 particles: {tiny * 1e3:.0f} ms "
             f"of work each, mostly compiling the spec and the metrics) go through an executor that is already "
             f"running; `dispatch per cell` is workers × (wall per tiny cell) − {tiny * 1e3:.0f} ms, the cost of "
             f"sending a cell and returning its row. Rows (timings aside) identical across the three executors: "
             f"{'yes' if same else 'NO'}.", "",
             f"| executor | workers | {args.suite} suite wall s | × serial | overhead per cell s | tiny cell wall ms | "
             "dispatch per cell ms |",
             "|---|---|---|---|---|---|---|"]
    for executor, jobs in EXECUTORS:
        wall, each = walls[executor, jobs], per_cell[executor, jobs]
        overhead = (jobs * wall - serial) / len(cells)
        lines.append(f"| {executor} | {jobs} | {wall:.1f} | {wall / serial:.2f} | {overhead:.3f} | {each * 1e3:.1f} | "
                     f"{(jobs * each - tiny) * 1e3:.0f} |")
    lines += ["", f"Dask against the local pool at 2 workers: {walls['dask', 2] / walls['local', 2]:.2f}× the wall "
                  f"time of the {args.suite} suite, {per_cell['dask', 2] / per_cell['local', 2]:.2f}× the wall time per tiny "
                  f"cell. The overhead is per cell (and, starting the cluster, per run), not per unit of work: its share "
                  f"shrinks as cells grow, and the {args.suite} suite's cells take {serial / len(cells):.2f} s each on average; a "
                  f"cluster pays off when it adds cores, not on the cores the local pool already uses."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "cluster.md" if args.suite == "quick" else f"cluster-{args.suite}.md"
    atomic_write_text(RESULTS / name, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
