"""Exact likelihood on ring8 (MATH §7): the flow-ODE twin's NLL against the mixture's own log-density.

For each spec, N points drawn from ring8 are scored by integrating the spec's flow-ODE twin
backward (dopri5 at the default tolerances, exact divergence) and compared, point by point,
with log Q_T, the target's exact log-density at the final noise level σ(T). Also reports the
SDE's ELBO, the NFE and the wall time. Writes benchmarks/results/likelihood.md (and .csv).

    python benchmarks/likelihood.py [--points 1000] [--specs ve_ode ve_sde ... diffusion_gan+kde]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from dfc.compiler import compile_spec
from dfc.io import atomic_write_text
from dfc.likelihood import ode_loglik, sde_elbo, sp_source
from dfc.sample import make_run_target
from dfc.spec import load_spec

OUT = Path(__file__).parent / "results"


def measure(name: str, points: int, rtol: float, atol: float, elbo_steps: int) -> dict:
    estimate = name.endswith("+kde")  # e.g. diffusion_gan+kde: s_p from the run's population estimate
    name = name.removesuffix("+kde")
    spec = compile_spec(load_spec(name), None, {"target": "ring8"})
    target = make_run_target(spec, dtype=torch.float64)
    pts = target.sample(points, torch.Generator().manual_seed(2024))
    source = sp_source(spec, target, prefer_estimate=estimate)
    r = ode_loglik(spec, target, pts, rtol=rtol, atol=atol, source=source)
    ideal = target.log_prob(pts * spec.at("u", spec.t1), spec.at("sigma", spec.t1)) + 2 * math.log(spec.at("u", spec.t1))
    diff = (r.logp - ideal).abs()
    e = sde_elbo(spec, target, pts, steps=elbo_steps, source=source)
    return {
        "spec": name + (" (kde)" if estimate else ""), "s_p": r.sp, "NLL": float(-r.logp.mean()), "target NLL": float(-ideal.mean()),
        "mean abs gap per point": float(diff.mean()), "max abs gap": float(diff.max()),
        "−ELBO": float(-e.logp.mean()), "ELBO SE": float(e.logp.std() / math.sqrt(points)),
        "NFE": r.nfe, "wall (s)": round(r.wall_s, 2), "ELBO wall (s)": round(e.wall_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--elbo-steps", type=int, default=200)
    ap.add_argument("--specs", nargs="+", default=["ve_ode", "ve_sde", "vp_ode", "subvp_ode", "diffusion_gan",
                                                           "diffusion_gan+kde"])
    args = ap.parse_args()
    from rich.console import Console
    from rich.progress import track

    rows = [measure(n, args.points, args.rtol, args.atol, args.elbo_steps) for n in track(args.specs, "specs")]
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "likelihood.csv", df.to_csv(index=False))
    cmd = f"python benchmarks/likelihood.py --points {args.points} --rtol {args.rtol} --atol {args.atol}"
    md = (f"Exact NLL on ring8, {args.points} points, dopri5 rtol = {args.rtol:g}, atol = {args.atol:g}, exact "
          f"divergence; `mean abs gap` is the per-point |log p_T − log Q_T| to the mixture's own log-density log Q_T.\n"
          f"Reproduce: `{cmd}`\n\n" + df.to_markdown(index=False, floatfmt=".4f") + "\n")
    atomic_write_text(OUT / "likelihood.md", md)
    Console().print(md)


if __name__ == "__main__":
    main()
