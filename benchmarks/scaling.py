"""How the cost of `dfc run` grows with the particle count N.

Three parts, timed separately on one thread: sampling (the steps and the score field), the
population estimate of s_p (a KDE: exact up to 4,096 particles, binned in 2-D, a subset of
1,024 in 16-D; MATH §10), and the metrics (`fast`: sliced W2, block MMD and energy; the floor
once, then from its cache). For each part the growth exponent k of time ∝ N^k between
consecutive sizes. Then two whole-process lines (the `dfc` command in a fresh process, default
threads, a cold floor cache): `dfc run specs/ve_ode.dfs --target ring8` at N = 10,000 and
100,000, and `dfc run specs/diffusion_gan.dfs` at N = 100,000; and one s_p evaluation against
one exact-field evaluation on grid25 at N = 100,000.

    python benchmarks/scaling.py      # writes benchmarks/results/scaling.md
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import best_of

RESULTS = Path(__file__).resolve().parent / "results"
CASES = [  # (spec, target, sizes)
    ("ve_ode", "ring8", (1_000, 10_000, 100_000, 1_000_000)),
    ("diffusion_gan", "ring8", (1_000, 10_000, 100_000)),
    ("diffusion_gan", "gmm16", (1_000, 10_000, 100_000)),
]


def parts(spec_name: str, target_name: str, n: int) -> dict:
    from dfc.sample import build, evaluate, make_run_target, simulate

    spec = build(spec_name, run={"target": target_name, "samples": str(n), "seed": "5"})
    target = make_run_target(spec)
    x, cost = simulate(spec, target)
    first = evaluate(spec, target, x, "fast")  # computes and caches the floor (unless another spec did)
    again = time.perf_counter()
    evaluate(spec, target, x, "fast")  # the floor from its cache: what every further run pays
    again = time.perf_counter() - again
    return {"sampling": cost["wall_s"] - cost["estimator_s"], "s_p": cost["estimator_s"], "metrics": again,
            "floor (once)": first["floor_s"] if not first["floor_cached"] else math.nan, "nfe": cost["nfe"]}


def exponent(ns, ts) -> list[str]:
    out = [""]
    for i in range(1, len(ns)):
        a, b = ts[i - 1], ts[i]
        out.append(f"{math.log(b / a) / math.log(ns[i] / ns[i - 1]):.2f}" if a > 0 and b > 0 else "")
    return out


def whole(args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DFC_CACHE": folder}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dfc", "run", *args, "--out", folder], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def one_evaluation(n: int = 100_000, sigma: float = 0.5) -> tuple[float, float]:
    """Best-of-5 seconds of one s_p (default KDE) and one exact-field evaluation on grid25 particles."""
    from dfc.kde import KDE
    from dfc.targets import make_target

    target = make_target("grid25").to(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x = target.sample(n, g) + sigma * torch.randn(n, 2, generator=g)
    kde = KDE()
    return best_of(lambda: kde.query(x, x, 0.0, False), 5)[0], best_of(lambda: target.score(x, sigma), 5)[0]


def main() -> None:
    from dfc.io import atomic_write_text

    torch.set_num_threads(1)
    lines = ["# Cost against the particle count", "",
             "`python benchmarks/scaling.py`. Seconds on one thread for one `dfc run` at the spec's own steps "
             "(ve_ode 32 Euler steps in the σ clock; diffusion_gan 16 steps in the σ² clock), split into sampling "
             "(steps and score field), s_p (the population estimate) and metrics (`fast`, the floor read from its "
             "cache; computing the floor once costs the next column, `cached` where another spec's run on the same "
             "target, N and seed had computed it). k: growth exponent, time ∝ N^k, from the "
             "previous size.", "",
             "| spec | target | N | sampling s | k | s_p s | k | metrics s | k | floor (once) s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DFC_CACHE"] = cache
        for spec, target, sizes in CASES:
            rows = [parts(spec, target, n) for n in sizes]
            ks = {p: exponent(sizes, [r[p] for r in rows]) for p in ("sampling", "s_p", "metrics")}
            for i, (n, r) in enumerate(zip(sizes, rows)):
                s_p = f"{r['s_p']:.3g}" if r["s_p"] > 0 else "—"
                lines.append(f"| {spec} | {target} | {n:,} | {r['sampling']:.3g} | {ks['sampling'][i]} | {s_p} | "
                             f"{ks['s_p'][i] if r['s_p'] > 0 else ''} | {r['metrics']:.3g} | {ks['metrics'][i]} | "
                             f"{'cached' if math.isnan(r['floor (once)']) else format(r['floor (once)'], '.3g')} |")
                print(lines[-1], flush=True)
    t10 = whole(["specs/ve_ode.dfs", "--target", "ring8", "--samples", "10000"])
    t100 = whole(["specs/ve_ode.dfs", "--target", "ring8", "--samples", "100000"])
    tgan = whole(["specs/diffusion_gan.dfs", "--samples", "100000"])
    sp, field = one_evaluation()
    lines += ["", "Whole processes (`python -m dfc run ...`, default threads, cold floor cache):", "",
              "| command | wall s |", "|---|---|",
              f"| `dfc run specs/ve_ode.dfs --target ring8 --samples 10000` | {t10:.1f} |",
              f"| `dfc run specs/ve_ode.dfs --target ring8 --samples 100000` | {t100:.1f} ({t100 / t10:.1f}× N = 10,000) |",
              f"| `dfc run specs/diffusion_gan.dfs --samples 100000` | {tgan:.1f} |", "",
              f"One evaluation at N = 100,000 on grid25 particles (σ = 0.5), one thread, best of 5: s_p by the default "
              f"KDE (binned) {sp * 1e3:.1f} ms, the exact score field {field * 1e3:.1f} ms: ratio {sp / field:.2f}."]
    print("\n".join(lines[-9:]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "scaling.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
