"""`dfc train score` under torchrun against one process: throughput (samples/s) and wall time.

Three ways to use this machine's cores for one training run, each the real command in fresh
processes, interleaved, best of `--repeats`:

- one process, one thread (`--threads 1`), dfc's default at these sizes (dfc/threads.py);
- one process, every core (`--threads N`);
- `torchrun --standalone --nproc_per_node=N -m dfc train score`, one thread per process (DDP,
  gloo): each process trains on 1/N of the global batch and the gradients are all-reduced.

Throughput is `train.json`'s samples/s (global batch × steps after the first, over the training
loop's wall time); wall time is the whole command, start-up included (torchrun starts N Python
processes and a rendezvous). The runs compute the same weights up to float32 rounding in the
all-reduce (tests/test_ddp.py). On one machine DDP is no way to go faster than threads; what this
measures is the cost of the data-parallel path per step, which is what a multi-machine run pays on
top of its network.

    python benchmarks/ddp.py            # writes benchmarks/results/ddp.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def command(how: str, cores: int, batch: int, steps: int, out: Path) -> tuple[list[str], dict]:
    """The command line and environment of one way (`threads1`, `threadsN`, `torchrun`)."""
    train = ["train", "score", "--target", "ring8", "--batch", str(batch), "--steps", str(steps),
             "--save-every", str(steps), "--preview", "0", "--out", str(out)]
    env = dict(os.environ)
    if how == "torchrun":
        env["OMP_NUM_THREADS"] = "1"
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cores}",
                 "-m", "dfc", *train, "--threads", "1"], env)
    return [sys.executable, "-m", "dfc", *train, "--threads", "1" if how == "threads1" else str(cores)], env


def timed(how: str, cores: int, batch: int, steps: int, folder: str) -> tuple[float, float]:
    """(wall seconds of the whole command, the training loop's samples/s)."""
    out = Path(tempfile.mkdtemp(dir=folder))
    cmd, env = command(how, cores, batch, steps, out)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, float(json.loads((out / "train.json").read_text())["samples_per_s"])


def main() -> None:
    from dfc.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="512,4096", help="global batch sizes, comma separated")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "ddp.md")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    ways = ("threads1", "threadsN", "torchrun")
    names = {"threads1": "1 process, 1 thread", "threadsN": f"1 process, {cores} threads",
             "torchrun": f"torchrun, {cores} processes × 1 thread"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for batch in (int(b) for b in args.batches.split(",")):
            best = {w: (float("inf"), 0.0) for w in ways}
            for _ in range(args.repeats):
                for w in ways:  # interleaved: drift in the machine's state hits every way alike
                    wall, rate = timed(w, cores, batch, args.steps, folder)
                    best[w] = (min(best[w][0], wall), max(best[w][1], rate))
                    print(f"batch {batch}, {names[w]}: {wall:.2f} s, {rate:,.0f} samples/s", flush=True)
            base = best["threads1"][1]
            for w in ways:
                rows.append(f"| {batch:,} | {names[w]} | {best[w][0]:.2f} | {best[w][1]:,.0f} | "
                            f"{best[w][1] / base:.2f} |")
    text = "\n".join([
        "# Data-parallel training on one machine: torchrun against threads", "",
        f"`python benchmarks/ddp.py` on {cores} cores: `dfc train score --target ring8` (width 256, depth 3), "
        f"{args.steps} steps, best of {args.repeats} interleaved runs per row, the machine otherwise idle. "
        "Throughput is the training loop's samples/s (global batch); wall time is the whole command with "
        "its start-up. The three runs compute the same weights up to float32 rounding (tests/test_ddp.py).", "",
        "| global batch | how | wall s | samples/s | × 1 thread |", "|---|---|---|---|---|", *rows, ""])
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
