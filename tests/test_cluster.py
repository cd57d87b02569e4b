"""`dfc bench --executor dask`: the same rows as local, no finished cell lost to a killed worker or
an interrupted client, failures named by key, clear errors without a scheduler."""

from __future__ import annotations

import os
import signal
import sys
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import dfc.bench as b
import dfc.executors as ex
from dfc.cli import app
from dfc.errors import ConfigError

distributed = pytest.importorskip("distributed", reason="the [cluster] extra (distributed) is not installed")

MINI = {"name": "mini", "specs": ["ve_ode", "diffusion_gan_gauss"], "peers": ["euler"], "targets": ["ring8"],
        "nfe": [4], "seeds": [0], "samples": 300, "nll_targets": ["ring8"], "nll_points": 30}
TIMINGS = ["wall_s", "cpu_s", "estimator_s"]  # naturally differ between runs


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two worker processes (one thread each), shared by the tests that connect to
    it with dask://HOST:PORT."""
    import logging

    before = os.environ.get(ex.TRIM)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as c, distributed.Client(c) as client:
        yield c, client
    _restore(before)


def _restore(trim: str | None) -> None:
    """A LocalCluster started with distributed's defaults leaves MALLOC_TRIM_THRESHOLD_ in this process's
    environment, which every later test's subprocesses would inherit (dfc.executors, module notes)."""
    if trim is None:
        os.environ.pop(ex.TRIM, None)
    else:
        os.environ[ex.TRIM] = trim


def address(cluster) -> str:
    return "dask://" + cluster[0].scheduler_address.removeprefix("tcp://")


def rows(folder, suite: str = "mini") -> pd.DataFrame:
    df = pd.read_csv(folder / suite / "results.csv")
    return df.drop(columns=[c for c in TIMINGS if c in df]).sort_values(["kind", "label", "target", "nfe_budget"]
                                                                       ).reset_index(drop=True)


def test_dask_gives_the_local_rows_of_the_quick_suite(tmp_path):
    runs = {}
    for executor, jobs in (("local", "1"), ("dask", "2")):
        r = CliRunner().invoke(app, ["bench", "--quick", "--executor", executor, "--jobs", jobs,
                                     "--out", str(tmp_path / executor)])
        assert r.exit_code == 0, r.output
        runs[executor] = rows(tmp_path / executor, "quick")
    local, dask = runs["local"], runs["dask"]
    quick = b.load_suite("quick")
    skipped = 18 * (not b.peers_available(quick["peers"]))  # 3 peers x 2 targets x 3 budgets
    assert len(local) == len(b.suite_cells(quick)) - skipped
    assert local["error"].isna().all() and local["nll"].notna().sum() == 4
    assert local[local["kind"] != "nll"]["sliced_w2"].notna().all()
    pd.testing.assert_frame_equal(local, dask)  # every metric value, exactly: cells are seeded


def slow_cells(n: int) -> list[b.Cell]:
    """Cells of about a second each on one core (exact NLLs), so that some are running at any moment."""
    return [b.Cell("nll", "ve_ode", "ring8", 0, 0, 40 + i, (), b.spec_source("ve_ode")) for i in range(n)]


def test_an_interrupted_client_resumes_with_only_the_missing_cells(cluster, tmp_path):
    cells = slow_cells(5)

    def interrupt_after_two(done, total, last):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.run_cells(cells, tmp_path, progress=interrupt_after_two, executor=address(cluster))
    kept = {f.name: f.stat().st_mtime_ns for f in tmp_path.glob("*.json")}
    assert len(kept) == 2  # the finished cells are cached, each complete (JSON that reads back)
    seen = []
    records = b.run_cells(cells, tmp_path, progress=lambda done, total, last: seen.append(done),
                          executor=address(cluster))
    assert seen == [2, 3, 4, 5]  # two read back, three computed
    assert all(tmp_path.joinpath(name).stat().st_mtime_ns == t for name, t in kept.items())  # not recomputed
    assert len(records) == 5 and all("error" not in r for r in records)


def test_a_killed_worker_loses_no_cell(cluster, tmp_path):
    _, client = cluster
    cells = slow_cells(4)
    killed = []

    def kill_one_busy_worker(done, total, last):
        if done >= 1 and not killed:
            pids = client.run(os.getpid)
            busy = [w for w, keys in client.processing().items() if keys]
            assert busy, "no cell running to lose"
            killed.append(pids[busy[0]])
            os.kill(killed[0], signal.SIGKILL)

    records = b.run_cells(cells, tmp_path, progress=kill_one_busy_worker, executor=address(cluster))
    assert killed and killed[0] not in client.run(os.getpid).values()  # it really died (the nanny replaced it)
    assert all("error" not in r and r["nll"] > 0 for r in records)
    assert {f.stem for f in tmp_path.glob("*.json")} == {c.key for c in cells}


def test_cells_a_worker_refuses_are_named_by_key_and_the_run_fails(cluster, tmp_path, monkeypatch):
    suite = tmp_path / "mini.yaml"
    suite.write_text(yaml.safe_dump({**MINI, "specs": ["ve_ode"], "peers": [], "nfe": [4], "nll_targets": []}))
    monkeypatch.setattr(ex, "code_version", lambda: "0ther-c0de")  # the client's view; workers compute their own
    r = CliRunner().invoke(app, ["bench", "--suite", str(suite), "--executor", address(cluster),
                                 "--out", str(tmp_path)])
    cells = b.suite_cells(b.check_suite(yaml.safe_load(suite.read_text())))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "2 cell(s) did not finish" in r.output and all(c.key in r.output for c in cells)
    assert "the client 0ther-c0de" in r.output and "install the same dfc" in r.output
    assert list((tmp_path / "cache").glob("*.json")) == []  # nothing cached: the next run retries them


def test_a_spec_file_the_worker_reads_otherwise_is_refused(tmp_path):
    spec = tmp_path / "mine.dfs"
    spec.write_text('spec mine extends ve_sde "mine"\n  param eta = 0.5\nend\n')
    cell = b.Cell("spec", str(spec), "ring8", 4, 0, 50, (), b.spec_source(str(spec)))
    spec.write_text('spec mine extends ve_sde "mine"\n  param eta = 0\nend\n')  # what a stale worker copy would hold
    with pytest.raises(ex.WorkerMismatch, match="give workers the same spec files"):
        ex.run_remote(cell, ex.code_version())


def test_a_peer_library_of_another_version_on_the_worker_is_refused():
    cell = b.Cell("peer", "euler", "ring8", 4, 0, 50, (), "k-diffusion 0.0.1")  # the client's version
    with pytest.raises(ex.WorkerMismatch, match="the client k-diffusion 0.0.1: install the same peer libraries"):
        ex.run_remote(cell, ex.code_version())


def test_executor_errors_are_one_paragraph_exit_2(tmp_path, monkeypatch):
    suite = tmp_path / "mini.yaml"
    suite.write_text(yaml.safe_dump(MINI))

    def bench(*args):
        return CliRunner().invoke(app, ["bench", "--suite", str(suite), "--out", str(tmp_path), *args])

    r = bench("--executor", "spark")
    assert r.exit_code == 2 and "is not an executor" in r.output and "dask://HOST:PORT" in r.output, r.output
    start = time.perf_counter()
    r = bench("--executor", "dask://127.0.0.1:9")  # the discard port: nobody answers
    assert r.exit_code == 2 and "no Dask scheduler answered at tcp://127.0.0.1:9" in r.output, r.output
    assert "Traceback" not in r.output and time.perf_counter() - start < 30
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    r = bench("--executor", "dask")
    assert r.exit_code == 2 and "needs the Python package `distributed`" in r.output and ".[cluster]" in r.output
    assert "Traceback" not in r.output


def test_parse_executor():
    assert ex.parse("local") == ex.Executor("local") and ex.parse("dask") == ex.Executor("dask")
    assert ex.parse("dask://10.0.0.5:8786") == ex.Executor("dask", "tcp://10.0.0.5:8786")
    for bad in ("dask://nohost", "dask://host:port", "ray", ""):
        with pytest.raises(ConfigError):
            ex.parse(bad)


def test_workers_keep_glibcs_adaptive_malloc():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which makes every tensor above 128 KiB a fresh mmap
    (a bench cell then costs ~2.5x its CPU time; executors module notes): dfc's LocalCluster does not
    set it, and a process that runs a cell on another cluster's worker undoes it."""
    before = os.environ.get(ex.TRIM)
    os.environ.pop(ex.TRIM, None)
    try:
        with ex._dask_client(None, 1) as client:
            assert set(client.run(os.environ.get, ex.TRIM).values()) == {None}
            import dask

            profiling = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
            assert set(profiling.values()) == {False}  # no dashboard to show it; it takes the GIL every 10 ms
        assert ex.TRIM not in os.environ
        import logging

        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR) as c, distributed.Client(c) as client:
            assert set(client.run(os.environ.get, ex.TRIM).values()) == {"65536"}  # distributed's default
            undone = client.submit(ex.malloc_as_default, pure=False).result()
            assert undone is sys.platform.startswith("linux")
    finally:
        _restore(before)
