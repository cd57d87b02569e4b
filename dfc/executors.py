"""Where `dfc bench` cells run (`--executor`): this machine's processes, or a Dask cluster.

- `local` (the default): cells in this process (`--jobs 1`) or in a pool of `--jobs` spawned
  processes that die with their parent (dfc.bench.die_with_parent).
- `dask`: a `distributed.LocalCluster` of `--jobs` worker processes, one thread each.
- `dask://HOST:PORT`: an existing Dask scheduler (`dask scheduler`, `dask worker ...`); its
  workers decide the parallelism, and `--jobs` is not used.

Every executor does one thing: given cells, yield `(cell, record)` in the order the cells finish.
The client (dfc.bench.run_cells) writes each record to the cache as it arrives, so what is lost
to an interrupt, a killed worker or a killed client is at most the cells still running.

A cell is a pure function of its key (dfc.bench.Cell.key: the spec's digest or the peer library's
version, target, NFE, seed, N, run settings, and the harness and dfc versions). On Dask a worker
first checks that it runs the client's code (`code_version`: a digest of dfc's source and the torch
version), reads the same spec files (their digest) and has the same peer library (its version;
both Cell.source); a mismatch is that cell's error, not a silently
different row. Dask reschedules the cells of a worker that died; a cell that cannot finish (it
killed `distributed.scheduler.allowed-failures` workers, or failed on the worker) comes back as
a record with `error` and `crashed`, which run_cells does not cache.

Memory. Dask's nanny starts each worker with `MALLOC_TRIM_THRESHOLD_=65536` (its
`distributed.nanny.pre-spawn-environ`; a LocalCluster also leaves it in the client's environment, for
every process started later). Setting that variable makes glibc stop adapting its mmap threshold,
so every buffer above 128 KiB (one 20,000 × 2 float64 tensor is 320 KB) is a fresh mmap, zero-filled
page by page, and unmapped on release: a bench cell then costs about 2.5× the CPU time it costs in a
local process (measured on one diffusion_gan cell at 20,000 particles, two seeds: 0.5 s of CPU in a
plain process, 1.4 s in a default Dask worker, 0.6 s with the variable unset). dfc's LocalCluster does not set the
variable, and every process that runs a cell (dfc.bench.run_cell) and finds it set restores glibc's
own limits first (`malloc_as_default`), whichever cluster started it.

Profiling. A Dask worker samples the stacks of its threads every 10 ms for the dashboard's profile
plot, which takes the GIL from the cell's thread; dfc's LocalCluster has no dashboard, and turns it
off (`distributed.worker.profile.enabled`). A rough side measurement (5 cells, one run, on a busy
machine) put its cost at 25–60% of a cell's CPU time; not re-measured on the whole suite. Workers of your own cluster can be started with it off (README, On a cluster).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from dfc.errors import CellsFailed, ConfigError

HELP = ("local (processes on this machine, the default) | dask (a Dask LocalCluster of --jobs workers) | "
        "dask://HOST:PORT (an existing Dask scheduler). Dask needs the cluster extra (README, On a cluster).")
CONNECT_TIMEOUT_S = 5  # how long to wait for a scheduler at dask://HOST:PORT
CLOSE_TIMEOUT_S = 10
DASK_HINT = 'Install it with `pip install -e ".[cluster]"` (or `pip install distributed`), or use --executor local.'

Results = Iterator[tuple]  # of (Cell, record)
Runner = Callable[[list], Results]


@dataclass(frozen=True)
class Executor:
    kind: str  # "local" or "dask"
    address: str | None = None  # dask: None for a LocalCluster, else the scheduler's tcp://HOST:PORT


def parse(text: str) -> Executor:
    """`local`, `dask` or `dask://HOST:PORT` (also `tcp://HOST:PORT`); anything else is a ConfigError."""
    t = (text or "").strip()
    if t in ("local", "dask"):
        return Executor(t)
    for scheme in ("dask://", "tcp://"):
        if t.startswith(scheme):
            rest = t[len(scheme):]
            host, _, port = rest.rpartition(":")
            if host and port.isdigit():
                return Executor("dask", f"tcp://{rest}")
    raise ConfigError(f"--executor {text!r} is not an executor.", None,
                      "Use local, dask, or dask://HOST:PORT (the address of a running `dask scheduler`, e.g. "
                      "dask://10.0.0.5:8786).")


@contextmanager
def runner(executor: Executor | str, jobs: int = 1) -> Iterator[Runner]:
    """A function from cells to `(cell, record)` pairs as they finish, valid inside the `with`; the
    processes or the cluster connection it holds are released on leaving, also on an interrupt."""
    ex = parse(executor) if isinstance(executor, str) else executor
    if ex.kind == "local":
        with _pool(jobs) as pool:
            yield lambda cells: _local(pool, cells)
        return
    with _dask_client(ex.address, jobs) as client:
        yield lambda cells: _dask(client, cells)


# ---------------------------------------------------------------------------------------
# local


@contextmanager
def _pool(jobs: int):
    """A pool of `jobs` spawned processes that die with this one (None for one job); its workers
    start on the first cell and serve every later one."""
    import multiprocessing
    import os

    from dfc import bench

    if jobs <= 1:
        yield None
        return
    # spawn: a fresh interpreter per worker, safe whatever torch's thread pools did in this one
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=bench.die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:  # interrupted: drop the queued cells (finished ones are cached) and stop
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _local(pool, cells: list) -> Results:
    from dfc import bench

    if pool is None or len(cells) <= 1:
        for c in cells:
            yield c, bench.run_cell(c)
        return
    futures = {pool.submit(bench.run_cell, c): c for c in cells}
    try:
        for fut in as_completed(futures):
            try:
                rec = fut.result()
            except BrokenProcessPool:  # a worker was killed (or ran out of memory): the pool is gone, and
                # every cell it had not finished is reported (not cached) for the next run to retry
                rec = failed(futures[fut], "its worker process died (killed, or out of memory)")
            yield futures[fut], rec
    finally:  # the consumer stopped early (an interrupt): the queued cells are not wanted
        for fut in futures:
            fut.cancel()


# ---------------------------------------------------------------------------------------
# Dask


@lru_cache(maxsize=1)
def code_version() -> str:
    """What must be the same on the client and every worker for a cell to give the same row: a
    digest of dfc's source (its .py and grammar files) and the torch version, read once per
    process (the code it imported)."""
    from importlib import resources

    import torch

    digest = hashlib.sha1(f"torch {torch.__version__}".encode())
    for package in ("dfc", "dfc.backends", "dfc.grammar"):
        root = resources.files(package)
        for f in sorted((f for f in root.iterdir() if f.name.endswith((".py", ".lark"))), key=lambda f: f.name):
            digest.update(f"{package}/{f.name}".encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


TRIM = "MALLOC_TRIM_THRESHOLD_"
WORKER_CONFIG = {f"distributed.nanny.pre-spawn-environ.{TRIM}": None,  # glibc's adaptive malloc (module notes)
                 "distributed.worker.profile.enabled": False}  # no dashboard to show it; it costs the cells
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@lru_cache(maxsize=1)
def malloc_as_default() -> bool:
    """Undo `MALLOC_TRIM_THRESHOLD_` in this process (see the module notes): an mmap threshold of 32 MiB,
    glibc's own ceiling for its adaptive one, and a trim threshold of 64 MiB. True if it was set and
    undone; a no-op elsewhere (not Linux, not glibc, or the variable not set)."""
    if TRIM not in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 64 << 20))
    except (OSError, AttributeError):  # musl or another libc: nothing to undo by this name
        return False


class WorkerMismatch(RuntimeError):
    """A worker that would not compute the client's cell: other code, or other spec files."""


def run_remote(cell, version: str) -> dict:
    """On a Dask worker: the cell's record, after checking that this worker runs the client's code
    (`version`) reads the cell's spec files as the client did, and runs a peer's library at the client's version
    (Cell.source)."""
    import socket

    from dfc import bench
    from dfc.errors import DfcError

    here = socket.gethostname()
    mine = code_version()
    if mine != version:
        raise WorkerMismatch(f"the worker on {here} runs dfc code version {mine}, the client {version}: install the "
                             f"same dfc (and torch) on every worker")
    if cell.source:
        try:
            source = bench.cell_source(cell.kind, cell.name)
        except DfcError as exc:
            source = f"unreadable ({exc.message})"
        if source != cell.source and cell.kind == "peer":
            raise WorkerMismatch(f"the worker on {here} has {source or 'no ' + cell.source.split()[0]} for peer "
                                 f"{cell.name!r}, the client {cell.source}: install the same peer libraries on every "
                                 f"worker")
        if source != cell.source:  # a spec or nll cell
            raise WorkerMismatch(f"the worker on {here} reads spec {cell.name!r} as {source}, the client as "
                                 f"{cell.source}: give workers the same spec files (presets need nothing)")
    return bench.run_cell(cell)


def failed(cell, error: str) -> dict:
    """The record of a cell that did not finish: reported, never cached (the next run retries it)."""
    from dfc import bench

    return {**bench.identity(cell), "error": error, "crashed": True}


def unfinished(cells: list, records: list[dict], shown: int = 5) -> CellsFailed | None:
    """The cells whose record says they crashed, each with its key and error, as one error (None if
    every cell finished)."""
    bad = [(c, r) for c, r in zip(cells, records) if r.get("crashed")]
    if not bad:
        return None
    listed = "; ".join(f"cell {c.key} ({c.label} on {c.target}, NFE {c.nfe}, seed {c.seed}): {r['error']}"
                       for c, r in bad[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return CellsFailed(f"{len(bad)} cell(s) did not finish and were not cached: {listed}{more}.", None,
                       "The other rows are written; run the same command again to retry only these cells.")


@contextmanager
def _dask_client(address: str | None, jobs: int):
    """A distributed.Client: of a new LocalCluster (`address` None) or of the scheduler at `address`."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--executor dask needs the Python package `distributed`, which is not installed.", None,
                          DASK_HINT) from None
    import dask

    cluster = None
    if address is None:
        with dask.config.set(WORKER_CONFIG):  # see the module notes
            cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = _connect(Client, address)
    try:
        yield client
    finally:
        client.close(timeout=CLOSE_TIMEOUT_S)
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT_S)


def _connect(client_class, address: str):
    shown = "dask://" + address.removeprefix("tcp://")
    try:
        return client_class(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--executor {shown}: no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s "
                          f"({type(exc).__name__}).", None,
                          "Start one there with `dask scheduler` and its workers with `dask worker "
                          f"{address} --nthreads 1`, check the host and port, or use --executor dask for a cluster "
                          "on this machine (README, On a cluster).") from None


GATHER_TRIES = 3  # a finished cell whose row is lost with its worker (killed before the row came back) runs again


def _dask(client, cells: list) -> Results:
    """Submit every cell (the first listed first), then yield them as they finish."""
    from distributed import as_completed as finished

    version = code_version()

    def submit(c, priority: int):
        return client.submit(run_remote, c, version, key=f"dfc-cell-{c.key}-{version}", priority=priority,
                             pure=False)

    futures = {submit(c, len(cells) - i): c for i, c in enumerate(cells)}
    tries = dict.fromkeys(futures.values(), 1)
    try:
        pending = finished(futures)
        for fut in pending:
            cell = futures[fut]
            if fut.status == "finished":
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 — the row was lost with its worker before it came back
                    fut.release()
                    if tries[cell] < GATHER_TRIES:  # the cell is pure: run it again
                        tries[cell] += 1
                        again = submit(cell, 0)
                        futures[again] = cell
                        pending.add(again)
                        continue
                    rec = failed(cell, f"its row could not be fetched {GATHER_TRIES} times: {type(exc).__name__}: {exc}")
            elif fut.status == "error":
                exc = fut.exception()
                rec = failed(cell, f"{type(exc).__name__}: {exc}")
            elif fut.status == "cancelled":
                rec = failed(cell, "cancelled by the scheduler")
            else:  # done, then lost with its worker and running again: wait for it once more
                pending.add(fut)
                continue
            fut.release()
            yield cell, rec
    finally:  # an interrupt: the scheduler forgets the cells this client no longer wants
        client.cancel([f for f in futures if not f.done()])


__all__ = ["HELP", "Executor", "parse", "runner", "code_version", "run_remote", "failed", "unfinished", "WorkerMismatch"]
