"""What the GAN-part presets' own laws are: the evidence behind RESULTS' "own law" reading.

`particles.py` runs each GAN-part preset with 128 NFE at N = 100,000 (its "own law": the law its
8- and 16-NFE runs approximate). This script asks what that law is and what it depends on, on
grid25 (25 equal modes, so the modes' masses can be read off) and, for the step count, on the
checkerboard too:

1. **Steps.** The own law at 128 and 256 NFE (sliced W2 to the bench's reference draw): the
   discretisation is gone when the two agree.
2. **Mode masses.** Each particle is assigned to its nearest mode of grid25; the table gives the
   centre mode's mass and the mean of the four corners' (×25: 1 is the target's), the spread of
   the 25 masses and the particles' sd about their mode (q's is 0.1). `diffusion_gan` (tracking,
   MATH §3) is the control.
3. **The start.** `diffflow_gan` from p_0 = Q_0 and from N(0, 5²) instead of its N(0, 2²): a law
   that follows p_0 has not forgotten its start by T.
4. **The bandwidth.** `diffflow_gan` at 128 NFE with `kde(h = 0.8)`, about the bandwidth floor
   (MATH §10) of its 8-NFE run, beside that 8-NFE run.
5. **diffusion_gan's settings at 8 NFE** (its own law is exact): η, the clock and the grid's ρ,
   the sampler settings a few-step run could change without changing the law (MATH §3: η changes
   g only). One seed: a hypothesis-level sweep.
6. **diffusion_gan and the bandwidth floor** at 8 and 16 NFE: the default estimator against
   `kde(cfl = 0)` (no floor). Equal rows mean the floor does not bind, so what separates the coarse
   runs from the own law is the discretisation alone.

    python benchmarks/own_law.py [--jobs 2] [--n 100000] [--seeds 2,3,4]
    python benchmarks/own_law.py --from-csv   # the report and plot again from own_law.csv, nothing run

Writes benchmarks/results/own_law.{csv,md,png}. Cells run one thread each, `--jobs` at a time.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from particles import LIMIT_NFE
from reporting import WALL_LINE, particle_count, previous_run, whole_numbers

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("diffflow_gan", "analytic_continuation", "diffusion_gan")
PRIORS = {"Q_0": "prior target", "N(0, 5²)": "prior normal(scale = 5)"}
SWEEP = ([{"eta": e, "clock": c} for e in ("0.1", "0.3", "1") for c in ("sigma", "sigma2")]
         + [{"grid": f"karras(rho = {r})"} for r in (3, 5, 10)])


def cell(spec: str, target_name: str, nfe: int, n: int, seed: int, sets: tuple = ()) -> dict:
    """One run: sliced W2 to the bench's reference draw, and on grid25 the modes' masses."""
    from dfc.bench import Cell, _compile, _reference, bench_settings
    from dfc.metrics import sliced_w2
    from dfc.sample import simulate
    from dfc.targets import make_target

    torch.set_num_threads(1)
    c = Cell("spec", spec, target_name, nfe, seed, n, tuple(sets))
    compiled = _compile(c, bench_settings(c))  # sets: params and run entries (clock, grid, fields), as a sweep's
    target = make_target(target_name).to(dtype=torch.float32)
    x, _ = simulate(compiled, target)
    x = (x if compiled.run.denoise else x * compiled.at("u", compiled.t1)).double()
    row = {"spec": Path(spec).stem, "target": target_name, "nfe": nfe, "n": n, "seed": seed,
           "settings": ", ".join(f"{k} = {v}" for k, v in sets) or "default",
           "sliced_w2": sliced_w2(x, _reference(target, n, seed).double())}
    if target_name == "grid25":
        means = target.components()[0].double()
        k = torch.cdist(x, means).argmin(1)
        mass = torch.bincount(k, minlength=len(means)).double().numpy() / len(x) * len(means)
        grid = mass.reshape(5, 5)
        corners = float(np.mean([grid[0, 0], grid[0, 4], grid[4, 0], grid[4, 4]]))
        row |= {"masses": " ".join(f"{v:.4f}" for v in mass), "centre": grid[2, 2], "corners": corners,
                "mass_min": mass.min(), "mass_max": mass.max(), "mass_sd": mass.std(),
                "mode_sd": float((x - means[k]).std(0).mean())}
    return row


def tasks(n: int, seeds: list[int], folder: Path) -> list[tuple]:
    out = []
    for spec, target, nfe in itertools.product(("diffflow_gan", "analytic_continuation"), ("grid25", "checkerboard"),
                                               (LIMIT_NFE, 2 * LIMIT_NFE)):
        out.append(("steps", (spec, target, nfe, n, seeds[0])))
    for spec, seed in itertools.product(PRESETS, seeds):
        out.append(("masses", (spec, "grid25", 128, n, seed)))
    for (label, line), seed in itertools.product(PRIORS.items(), seeds):
        path = folder / f"diffflow_gan_{'q0' if label == 'Q_0' else 'wide'}.dfs"
        path.write_text(f'spec {path.stem} extends diffflow_gan "diffflow_gan from {label}"\n  {line}\nend\n')
        out.append(("start", (str(path), "grid25", 128, n, seed)))
    for seed in seeds:
        out.append(("bandwidth", ("diffflow_gan", "grid25", 128, n, seed, (("fields", "exact + kde(h = 0.8)"),))))
        out.append(("bandwidth", ("diffflow_gan", "grid25", 8, n, seed)))
    for target, nfe, fields in itertools.product(("grid25", "checkerboard", "ring8"), (8, 16),
                                                 ("exact + kde", "exact + kde(cfl = 0)")):
        out.append(("floor", ("diffusion_gan", target, nfe, n, seeds[0], (("fields", fields),))))
    for target, sets in itertools.product(("grid25", "checkerboard", "ring8"), [{}] + SWEEP):
        out.append(("sweep", ("diffusion_gan", target, 8, n, seeds[0], tuple(sets.items()))))
    return out


def run_all(n: int, seeds: list[int], jobs: int) -> pd.DataFrame:
    from rich.progress import Progress

    with tempfile.TemporaryDirectory() as tmp:
        todo = tasks(n, seeds, Path(tmp))
        todo.sort(key=lambda t: -t[1][2] * (3 if t[1][1] == "checkerboard" else 1))  # costly cells first
        rows = []
        with ProcessPoolExecutor(jobs) as pool, Progress() as bar:
            job = bar.add_task("own laws", total=len(todo))
            futures = [(part, pool.submit(cell, *args)) for part, args in todo]
            for part, f in futures:
                rows.append({"part": part, **f.result()})
                bar.advance(job)
    return pd.DataFrame(rows)


def _ms(g: pd.Series, digits: int = 3) -> str:
    return f"{g.mean():.{digits}f} ± {g.std():.{digits}f}" if len(g) > 1 else f"{g.mean():.{digits}f}"


def markdown(df: pd.DataFrame, n: int, seeds: list[int], wall: str) -> str:
    lines = ["# The GAN-part presets' own laws", "",
             f"`python benchmarks/own_law.py` at N = {n:,}; mean ± sd over seeds {', '.join(map(str, seeds))} where "
             f"several, else seed {seeds[0]}. Mode masses ×25 (the target's: 1); `mode sd`: the particles' sd "
             f"about their nearest mode (q's: 0.1). Module doc for what each part asks. The masses of parts 2–4 "
             f"as 5×5 maps: `own_law.png` beside this file.", ""]
    steps = df[df["part"] == "steps"].pivot_table(index=["spec", "target"], columns="nfe", values="sliced_w2")
    lines += ["## 1. Steps: the own law at 128 and 256 NFE", "", "| spec | target | 128 NFE | 256 NFE | change |",
              "|---|---|---|---|---|"]
    for (spec, target), r in steps.iterrows():
        lines.append(f"| {spec} | {target} | {r[128]:.4f} | {r[256]:.4f} | {r[256] - r[128]:+.4f} |")
    lines += ["", f"Largest change from 128 to 256 NFE: {(steps[256] - steps[128]).abs().max():.4f}.", ""]

    def masses(part: str, title: str, keys: list[str]) -> list[str]:
        g = df[df["part"] == part]
        out = [title, "", "| " + " | ".join(keys) + " | sliced W2 | centre | corners | min | max | sd of masses "
               "| mode sd |", "|" + "---|" * (len(keys) + 7)]
        for key, h in g.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            out.append("| " + " | ".join(map(str, key)) + f" | {_ms(h['sliced_w2'])} | {_ms(h['centre'], 2)} | "
                       f"{_ms(h['corners'], 2)} | {h['mass_min'].min():.2f} | {h['mass_max'].max():.2f} | "
                       f"{_ms(h['mass_sd'], 3)} | {_ms(h['mode_sd'], 3)} |")
        return out + [""]

    lines += masses("masses", "## 2. Mode masses of the own laws (grid25, 128 NFE)", ["spec"])
    lines += masses("start", "## 3. diffflow_gan from another start (grid25, 128 NFE)", ["spec"])
    lines += masses("bandwidth", "## 4. diffflow_gan: the 8-NFE run and the 128-NFE run at its bandwidth (grid25)",
                    ["nfe", "settings"])
    sweep = df[df["part"] == "sweep"].pivot_table(index="settings", columns="target", values="sliced_w2",
                                                   sort=False)
    lines += [f"## 5. diffusion_gan at 8 NFE: η, clock, grid (seed {seeds[0]})", "",
              "| settings | " + " | ".join(sweep.columns) + " |", "|---|" + "---|" * len(sweep.columns)]
    for settings, r in sweep.iterrows():
        lines.append(f"| {settings} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
    best = sweep.idxmin()
    lines += ["", "Best per target: " + ", ".join(f"{t}: {best[t]}" for t in sweep.columns) + ".", ""]
    floor = df[df["part"] == "floor"]
    if not floor.empty:
        table = floor.pivot_table(index=["target", "nfe"], columns="settings", values="sliced_w2")
        default, off = "fields = exact + kde", "fields = exact + kde(cfl = 0)"
        lines += [f"## 6. diffusion_gan: does the bandwidth floor bind? (seed {seeds[0]})", "",
                  "| target | NFE | default (floor) | cfl = 0 (no floor) | equal |", "|---|---|---|---|---|"]
        for (target, nfe), r in table.iterrows():
            lines.append(f"| {target} | {nfe} | {r[default]:.4f} | {r[off]:.4f} | "
                         f"{'yes' if r[default] == r[off] else '**no**'} |")
        lines.append("")
    lines.append(wall)
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, path: Path) -> None:
    """grid25's mode masses (×25, mean over seeds) of parts 2–4 (the own laws, the other starts, the
    bandwidth) as 5×5 maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dfc.io import atomic_save_figure

    panels = []
    for (_, spec, nfe, settings), g in df[df["part"].isin(["masses", "start", "bandwidth"])].groupby(
            ["part", "spec", "nfe", "settings"], sort=False):
        panels.append((f"{spec}, {nfe} NFE" + ("" if settings == "default" else f"\n{settings}"), g))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels) + 1, 3.0), squeeze=False, layout="constrained")
    for ax, (title, g) in zip(axes[0], panels):
        grid = np.mean([np.array(m.split(), float) for m in g["masses"]], axis=0).reshape(5, 5)
        image = ax.imshow(grid.T, origin="lower", cmap="RdBu_r", vmin=0.5, vmax=1.5)
        for i, j in itertools.product(range(5), range(5)):
            ax.text(i, j, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="mode mass × 25 (target: 1)")
    fig.suptitle("grid25: where each law puts its mass", fontsize=10)
    atomic_save_figure(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--n", type=particle_count, default=100_000)
    ap.add_argument("--seeds", type=whole_numbers(), default="2,3,4")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from-csv", action="store_true", help="write the report from OUT/own_law.csv; run nothing")
    args = ap.parse_args()
    from dfc.io import atomic_write_text

    if args.from_csv:
        df, wall = previous_run(args.out, "own_law")
        first = int(df[df["part"] == "steps"]["seed"].iloc[0])  # the one-seed parts ran on the first seed given
        seeds, n = [first] + sorted(set(df["seed"].unique()) - {first}), int(df["n"].iloc[0])
    else:
        seeds, n = args.seeds, args.n
        start = time.perf_counter()
        df = run_all(n, seeds, args.jobs)
        atomic_write_text(args.out / "own_law.csv", df.to_csv(index=False))
        wall = f"{WALL_LINE} {time.perf_counter() - start:.0f} s, --jobs {args.jobs}."
    text = markdown(df, n, seeds, wall)
    atomic_write_text(args.out / "own_law.md", text)
    if "masses" in df:  # a CSV from before the masses were kept has no maps to draw
        plot(df, args.out / "own_law.png")
    print(text)


if __name__ == "__main__":
    main()
