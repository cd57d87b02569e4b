"""Overhead of the native sampler: its wall time over NFE × the time of one field evaluation.

ring8, exact fields, 10,000 particles. The field evaluations are replayed alone on the states the
sampler met (so both see the same inputs); a field evaluation is everything the drift needs from the
fields at one time (s_Q, and for specs with a GAN part the population estimate of s_p and the
smoothed s_Q^h); the sampler adds the drift's combination, the noise and the step. Aim: ≤ 1.05.
Measured in one run, each number the best of several repetitions (the least disturbed by other load).

    python benchmarks/overhead.py [--particles 10000] [--repeats 5] [--specs ve_ode ve_sde diffusion_gan]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dfc.compiler import compile_spec
from dfc.fields import Drift, make_estimator
from dfc.sample import generator_for, make_run_target, sample_prior
from dfc.solvers import Grid, Terms, solve_run
from dfc.spec import load_spec


def measure(name: str, particles: int, repeats: int, steps: int) -> dict:
    spec = compile_spec(load_spec(name), None, {"target": "ring8", "samples": str(particles), "steps": str(steps)})
    target = make_run_target(spec)
    grid = Grid.of(spec)
    ts = grid.ts
    x0 = sample_prior(spec, target, particles, generator_for("cpu", 0))
    # the field evaluations of a run, replayed alone on the very states the sampler met
    states: list[torch.Tensor] = []
    with torch.no_grad():
        solve_run(spec, Terms(Drift(spec, target, make_estimator(spec, target))), x0, grid,
                  generator=generator_for("cpu", 0), record=lambda i, x: states.append(x))
    drift = Drift(spec, target, make_estimator(spec, target))
    drift.prepare(ts)
    noisy = sum(1 for t in ts[:-1] if drift.noise(float(t)) > 0)

    def fields_alone():
        for x, t in zip(states[:-1], ts[:-1]):
            drift.fields(x, float(t))

    nfe = 0

    def sampler():
        nonlocal nfe
        d = Drift(spec, target, make_estimator(spec, target))
        with torch.no_grad():
            solve_run(spec, Terms(d), x0, grid, generator=generator_for("cpu", 0))
        nfe = d.nfe

    def draws_alone():  # the SDE's Gaussian draws (one N×D draw per noisy step): no fusion removes them
        gen = generator_for("cpu", 0)
        for _ in range(noisy):
            torch.randn(x0.shape, generator=gen, dtype=x0.dtype)

    # interleaved, so that all three see the same machine; the best of each is the least disturbed
    field_times, sampler_times, draw_times = [], [], []
    for _ in range(repeats):
        for fn, into in ((fields_alone, field_times), (sampler, sampler_times), (draws_alone, draw_times)):
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    field_times = [f / (len(ts) - 1) for f in field_times]
    field, sampler, draws = min(field_times), min(sampler_times), min(draw_times)
    return {"spec": name, "nfe": nfe, "field_ms": 1e3 * field, "sampler_s": sampler, "draws_s": draws,
            "ratio": sampler / (nfe * field), "ratio_without_draws": (sampler - draws) / (nfe * field)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--specs", nargs="+", default=["ve_ode", "ve_sde", "diffusion_gan"])
    args = ap.parse_args()
    torch.manual_seed(0)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"native sampler overhead, ring8, {args.particles} particles, exact fields")
    for col in ("spec", "NFE", "one field eval (ms)", "sampler (s)", "noise draws (s)", "sampler / (NFE × field)",
                "same, less the draws"):
        table.add_column(col, justify="right")
    rows = []
    for name in args.specs:
        steps = args.steps if name != "diffusion_gan" else min(args.steps, 16)
        m = measure(name, args.particles, args.repeats if name != "diffusion_gan" else 3, steps)
        rows.append(m)
        table.add_row(m["spec"], str(m["nfe"]), f"{m['field_ms']:.3f}", f"{m['sampler_s']:.4f}", f"{m['draws_s']:.4f}",
                      f"{m['ratio']:.3f}", f"{m['ratio_without_draws']:.3f}")
    Console().print(table)
    from dfc.io import atomic_write_text

    lines = [f"ring8, {args.particles} particles, exact fields, best of {args.repeats} interleaved repeats. "
             "Reproduce: `python benchmarks/overhead.py`.", "",
             "| spec | NFE | one field eval (ms) | sampler (s) | noise draws (s) | sampler / (NFE × field) | "
             "same, less the draws |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {m['spec']} | {m['nfe']} | {m['field_ms']:.3f} | {m['sampler_s']:.4f} | {m['draws_s']:.4f} | "
              f"{m['ratio']:.3f} | {m['ratio_without_draws']:.3f} |" for m in rows]
    out = Path(__file__).parent / "results" / "overhead.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
