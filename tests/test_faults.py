"""Hostile inputs and faults, continued (issue 13, categories 6-10): odd but legal options, output
folders that cannot be written, outputs complete as a set under kill -9, ill-posed specs between the
check points, and runs that blow up. Each refusal: exit code 2, one paragraph, no traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dfc.cli import app
from dfc.errors import OutputError

runner = CliRunner()
SMALL = ["--samples", "200", "--steps", "4", "--metrics", "none"]
LIMIT_S = 10.0  # CPU seconds per refusal


def refused(args, *words):
    start = time.process_time()
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and r.output.count("error:") == 1, r.output
    for w in words:
        assert w in r.output, r.output
    assert time.process_time() - start < LIMIT_S
    return r.output


def ran(args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 6. odd but legal options


@pytest.mark.parametrize("args,words", [
    (["--seed", str(2**64)], ["seed", "4,294,967,295"]),
    (["--seed", "-1"], ["seed", "from 0"]),
    (["--run", "seed=1e30"], ["seed", "4,294,967,295"]),
    (["--device", "meta"], ["'meta' is not available here to hold samples", "--device cpu"]),
    (["--device", "fpga"], ["'fpga' is not available here"]),
])
def test_odd_run_options_are_refused_before_sampling(tmp_path, args, words):
    refused(["run", "diffusion_gan", *SMALL, *args, "--out", tmp_path / "o"], *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,words", [(["--seed", str(2**70)], ["seed"]), (["--device", "meta"], ["meta"])])
def test_odd_train_options_are_refused_before_training(tmp_path, args, words):
    refused(["train", "score", "--target", "ring8", "--steps", "5", *args, "--out", tmp_path / "s"], *words)
    assert not (tmp_path / "s" / "score.safetensors").exists()


def test_largest_seed_runs(tmp_path):
    ran(["run", "ve_sde", *SMALL, "--seed", str(2**32 - 1), "--out", tmp_path / "o"])
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["seed"] == 2**32 - 1


def test_big_endian_target_is_the_same_data(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 2))
    np.save(tmp_path / "little.npy", x.astype("<f8"))
    np.save(tmp_path / "big.npy", x.astype(">f8"))
    for name in ("little", "big"):
        ran(["run", "ve_sde", *SMALL, "--target", tmp_path / f"{name}.npy", "--out", tmp_path / name])
    assert np.array_equal(np.load(tmp_path / "little" / "samples.npy"), np.load(tmp_path / "big" / "samples.npy"))


@pytest.mark.parametrize("value", [0.0, 1e6])
def test_constant_target_runs_to_its_picture(tmp_path, value):
    np.save(tmp_path / "c.npy", np.full((300, 2), value))
    ran(["run", "ve_sde", *SMALL, "--target", tmp_path / "c.npy", "--out", tmp_path / "o"])
    assert (tmp_path / "o" / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def score_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("score")
    ran(["train", "score", "--target", "ring8", "--steps", "5", "--batch", "32", "--hidden", "8", "--depth", "1",
         "--preview", "0", "--out", out])
    return out / "score.safetensors"


@pytest.mark.parametrize("key,entry", [("dim", "arch.dim"), ("arch", "entry arch "), ("hidden", "arch.hidden"),
                                       ("data", "entry data "), ("kind", "entry kind ")])
def test_bit_flip_in_a_checkpoint_header_key_names_it(tmp_path, score_ckpt, key, entry):
    blob = bytearray(score_ckpt.read_bytes())
    at = blob.find(f'\\"{key}\\"'.encode())
    assert at > 0
    blob[at + 3] ^= 1  # one bit of the key's first letter: same length, valid JSON, another key
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(blob))
    refused(["run", "ve_sde", *SMALL, "--fields", f'learned(score = "{bad}")', "--out", tmp_path / "o"],
            "is corrupt", entry)


# -- 7. output folders that cannot be written


def _fail_with(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


PROC = "/proc/self/no-such-place/out"


@pytest.mark.parametrize("command", [
    ["run", "ve_sde", *SMALL, "--out", "{out}"],
    ["fmt", "ve_sde", "--to", "yaml", "--out", "{out}/ve.yaml"],
    ["nll", "ve_sde", "--points", "20", "--no-elbo", "--out", "{out}"],
    ["train", "score", "--target", "ring8", "--steps", "3", "--batch", "16", "--hidden", "8", "--preview", "0",
     "--out", "{out}"],
])
@pytest.mark.parametrize("fault", ["proc", "EROFS", "EACCES"])
def test_unwritable_output_is_one_clean_error(tmp_path, monkeypatch, command, fault):
    """Refused up front: no sampling, training or scoring whose result could not be kept."""
    out = PROC if fault == "proc" else str(tmp_path / "out")
    if fault == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    if fault != "proc":
        monkeypatch.setattr(tempfile, "mkdtemp", _fail_with(getattr(errno, fault)))
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", _fail_with(getattr(errno, fault)))
    words = {"proc": "No such file", "EROFS": "read-only file system", "EACCES": "no permission"}[fault]
    refused([c.format(out=out) for c in command], "cannot write", words, "--out")
    monkeypatch.undo()
    if fault != "proc":
        assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
        assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir()
                                                        if p.name != "ve.yaml"]


@pytest.mark.parametrize("command,made", [
    (["run", "ve_sde", *SMALL, "--out", "{out}"], ["metrics.json", "samples.npy", "samples.png"]),
    (["fmt", "ve_sde", "--to", "yaml", "--out", "{out}/ve.yaml"], ["ve.yaml"]),
    (["train", "score", "--target", "ring8", "--steps", "3", "--batch", "16", "--hidden", "8", "--preview", "0",
      "--out", "{out}"], ["score.safetensors"]),
])
def test_full_disk_keeps_the_previous_outputs(tmp_path, monkeypatch, command, made):
    out = tmp_path / "out"
    args = [c.format(out=out) for c in command]
    ran(args)
    before = {name: (out / name).read_bytes() for name in made}
    monkeypatch.setattr(os, "fsync", _fail_with(errno.ENOSPC))  # every write fails when it is made durable
    refused(args, "cannot write", "the disk (or the user's quota) is full", "Free some space")
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in made} == before
    assert [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")] == []  # no temporaries left


def test_run_refuses_a_folder_that_is_not_its_own(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    refused(["run", "ve_sde", *SMALL, "--out", tmp_path], "holds files dfc run did not write (notes.txt)")
    assert listing(tmp_path) == ["notes.txt"]


def test_run_replaces_the_whole_set(tmp_path):
    """A run on the digits writes grid.png too; a later 2-D run in the same folder leaves no stale grid."""
    out = tmp_path / "o"
    ran(["run", "ve_sde", *SMALL, "--out", out])
    (out / "grid.png").write_bytes(b"an earlier run's grid")
    ran(["run", "ve_sde", *SMALL, "--out", out])
    assert listing(out) == ["metrics.json", "samples.npy", "samples.png"]
    assert listing(tmp_path) == ["o"]


# -- 8. the outputs are complete as a set, whenever dfc run is killed


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _run_result(seed: int):
    from dfc.sample import build, run

    return run(build("ve_sde", None, {"samples": "300", "steps": "3", "seed": str(seed)}), metrics="none")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_during_the_writes_leaves_a_complete_set(tmp_path):
    """Twenty writers of a run's outputs (forked: the write phase of `dfc run` without its start-up),
    each killed with SIGKILL at a random moment of its writes: the folder holds the complete old set
    or the complete new set, and the next write cleans up the temporaries."""
    from dfc.io import recover_folder, replace_folder
    from dfc.sample import RUN_FILES, render_outputs

    out = tmp_path / "o"
    sets = [render_outputs(_run_result(seed)) for seed in (1, 2)]
    digests = [{k: hashlib.sha256(v).hexdigest() for k, v in files.items()} for files in sets]
    replace_folder(out, sets[0], RUN_FILES)
    start = time.perf_counter()
    replace_folder(tmp_path / "timing", sets[1], RUN_FILES)
    window = time.perf_counter() - start
    rng = random.Random(13)
    seen = set()
    for i in range(20):
        pid = os.fork()
        if pid == 0:  # the child: write the other set, and nothing else
            try:
                replace_folder(out, sets[(i + 1) % 2], RUN_FILES)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 1.5 * window))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        now = _digests(out)
        assert now in digests, f"repeat {i}: a mixed or partial set {now}"
        seen.add(digests.index(now))
        recover_folder(out)  # what the next run does first
        assert listing(tmp_path) == ["o", "timing"], f"repeat {i}: temporaries left: {listing(tmp_path)}"
        if digests.index(now) == i % 2:  # the kill came before the swap: the next writer writes the same set
            replace_folder(out, sets[(i + 1) % 2], RUN_FILES)
    assert _digests(out) in digests


def test_without_an_atomic_swap_a_crash_between_the_renames_is_completed(tmp_path, monkeypatch):
    """Where the system has no RENAME_EXCHANGE: the swap is two renames; a crash between them leaves
    the old set aside, which the next write puts back before it starts."""
    import dfc.io as dio

    monkeypatch.setattr(dio, "_exchange", lambda a, b: False)
    out = tmp_path / "o"
    dio.replace_folder(out, {"samples.npy": b"old"})
    dio.replace_folder(out, {"samples.npy": b"new"})  # the two-rename path, run to the end
    assert (out / "samples.npy").read_bytes() == b"new" and listing(tmp_path) == ["o"]
    aside = tmp_path / ".o.dfc-old-x1"
    os.rename(out, aside)  # a crash after the first rename: the old set aside, the new one not yet in place
    (tmp_path / ".o.dfc-new-x2").mkdir()
    (tmp_path / ".o.dfc-new-x2" / "samples.npy").write_bytes(b"newer")
    dio.recover_folder(out)
    assert (out / "samples.npy").read_bytes() == b"new" and listing(tmp_path) == ["o"]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux")
def test_kill_9_of_dfc_run_while_it_writes(tmp_path):
    """The real command: killed as soon as its new set starts to appear beside the folder."""
    out = tmp_path / "o"
    ran(["run", "ve_sde", *SMALL, "--seed", "1", "--out", out])
    old = _digests(out)
    proc = subprocess.Popen([sys.executable, "-m", "dfc", "run", "ve_sde", *SMALL, "--seed", "2", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(any(p.iterdir()) for p in tmp_path.glob(".o.dfc-new-*") if p.is_dir()):
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    now = _digests(out)
    assert now == old or (set(now) == set(old) and now["samples.npy"] != old["samples.npy"]
                          and json.loads((out / "metrics.json").read_text())["seed"] == 2)


# -- 9. ill-posed between the check points


def spec_file(tmp_path, body: str) -> Path:
    p = tmp_path / "h.dfs"
    p.write_text(f"spec h extends ve_sde\n  {body}\nend\n")
    return p


@pytest.mark.parametrize("body,words", [
    ("sigma(t) = 1 + 1/(t-0.123456789)^2", ["h.dfs:2:3", "sigma", "t = 0.123456789", "a pole"]),
    ("beta(t) = g2(t)/2 + 1/(t - 0.4444444)^2", ["h.dfs:2:3", "beta", "t = 0.4444444", "a pole"]),
    ("beta(t) = g2(t)/2 + sqrt((t-0.3001)*(t-0.3002))", ["beta", "negative on (0.3001, 0.3002)", "not real"]),
    ("beta(t) = g2(t)/2 + 1e-9*log((t-0.77777)^2)", ["beta", "t = 0.77777", "log vanishes"]),
    ("beta(t) = g2(t)/2 + t/(t^3 - 0.02)^2", ["beta", "t = 0.271441", "a pole"]),
    # terms with x or D: each time coefficient of their polynomial in x and D is examined
    ("f(x, t) = -x/(t - 0.5123456789)", ["h.dfs:2:3", "f is not", "t = 0.512345679", "a pole"]),
    ("beta(t) = g2(t)/2 + D(x, t)*sqrt((t-0.6001)*(t-0.6002))", ["beta", "negative on (0.6001, 0.6002)"]),
])
def test_singularity_between_check_points_is_refused(tmp_path, body, words):
    refused(["check", spec_file(tmp_path, body), "--no-latex"], "not finite or not real", *words)


@pytest.mark.parametrize("body", ["beta(t) = g2(t)/2 + 1/(t^2 + 0.01)", "beta(t) = g2(t)/2 + 1/(t + 2)",
                                  "beta(t) = g2(t)/2 + sqrt((t - 2)^2)", "beta(t) = g2(t)/2 + sin(t)/(t + 1e-3)",
                                  "f(x, t) = -x/(t + 2)", "f(x, t) = -tanh(x)/(t + 2)"])
def test_regular_terms_pass_the_symbolic_check(tmp_path, body):
    ran(["check", spec_file(tmp_path, body), "--no-latex"])


@pytest.mark.parametrize("grid,words", [("karras(rho = 1e400)", ["finite number"]),
                                        ("karras(rho = 1e300)", ["no usable grid", "rho"]),
                                        ("karras(rho = 1e-300)", ["no usable grid"])])
def test_degenerate_karras_grid_is_refused(tmp_path, grid, words):
    refused(["run", "ve_sde", *SMALL, "--grid", grid, "--out", tmp_path / "o"], *words)
    assert not (tmp_path / "o").exists()


# -- 10. divergence


@pytest.mark.parametrize("args,words", [
    (["diffusion_gan", "--set", "kappa=1e6", "--fields", "exact + gauss"], ["step 1 (t = 0)", "the GAN term"]),
    (["diffusion_gan", "--set", "kappa=1e12", "--fields", "exact + kde(cfl = 0)"], ["step 1", "the GAN term"]),
    (["langevin", "--steps", "2"], ["step 2 (t = 10)", "the score term"]),
    (["diffusion_gan", "--set", "kappa=1e6", "--fields", "exact + gauss", "--backend", "torchsde", "--clock", "t"],
     ["step 1 (t = 0)", "the GAN term"]),
])
def test_a_blown_up_run_is_an_error_and_keeps_the_previous_outputs(tmp_path, args, words):
    out = tmp_path / "o"
    ran(["run", "ve_sde", *SMALL, "--out", out])
    before = _digests(out)
    refused(["run", *args, "--samples", "300", "--metrics", "none", "--out", out], "blew up", "problem's scale",
            *words)
    assert _digests(out) == before


def test_bench_counts_a_blown_up_cell_as_diverged():
    from dfc.bench import Cell, run_cell

    rec = run_cell(Cell("spec", "langevin", "ring8", 2, 0, 300))
    assert "error" not in rec and "blew up" in rec["note"]
    assert rec["sliced_w2"] == float("inf")


def test_output_error_is_a_data_error():
    from dfc.errors import DataError

    assert issubclass(OutputError, DataError)  # callers that catch DataError for outputs keep working
