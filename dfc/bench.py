"""`dfc bench`: quality against NFE and wall time, for every spec and for the peers.

A suite (YAML in benchmarks/suites/) names specs, peers, targets, NFE budgets, seeds and the
number of samples. It expands into cells, one sampler run each; each cell's result is cached
as a JSON file as soon as it finishes (atomically), so an interrupted run resumes and computes
only what is missing, and `--jobs N` runs cells in parallel processes. Results become a long
CSV, Markdown tables, a rich table per target, PNG plots of quality against NFE and against
wall time, and `benchmarks/RESULTS.md`.

Every table has a floor row: the same metric between two independent target draws of the same
size. NFE counts score-field evaluations (for peers: denoiser calls), the same way for all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

from dfc.errors import ConfigError, DfcError

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "benchmarks" / "suites"
RESULTS = ROOT / "benchmarks" / "results"
METRIC = "sliced_w2"  # the headline quality metric (lower is better)
SUITE_KEYS = {"name", "specs", "peers", "targets", "nfe", "seeds", "samples", "nll_targets", "nll_points"}


# ---------------------------------------------------------------------------------------
# Suites and cells


def load_suite(name_or_path: str) -> dict:
    p = Path(name_or_path)
    if not p.exists():
        p = SUITES / f"{name_or_path}.yaml"
    try:
        suite = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(q.stem for q in SUITES.glob("*.yaml")))
        raise ConfigError(f"no benchmark suite {name_or_path!r}.", None, f"Suites: {known}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"suite {p}: YAML error: {exc}.") from None
    if not isinstance(suite, dict) or set(suite) - SUITE_KEYS:
        raise ConfigError(f"suite {p}: a mapping with keys {', '.join(sorted(SUITE_KEYS))}.")
    if suite.get("specs") == "all":
        from dfc.spec import preset_dir

        suite["specs"] = sorted(q.stem for q in preset_dir().glob("*.dfs"))
    suite.setdefault("name", p.stem)
    for key, default in (("peers", []), ("seeds", [0]), ("samples", 2000), ("nll_targets", []), ("nll_points", 500)):
        suite.setdefault(key, default)
    return suite


@dataclass(frozen=True)
class Cell:
    kind: str  # "spec", "peer", "floor" or "nll"
    name: str  # spec name or path, peer name, or "" for the floor
    target: str
    nfe: int
    seed: int
    samples: int
    sets: tuple = ()  # (param, value) pairs of a sweep

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return self.name + "".join(f" {k}={v}" for k, v in self.sets) if self.kind != "floor" else "floor"


def suite_cells(suite: dict, sweeps: list[tuple] | None = None) -> list[Cell]:
    cells = []
    n = int(suite["samples"])
    set_grid = sweeps or [()]
    for target, seed in itertools.product(suite["targets"], suite["seeds"]):
        cells.append(Cell("floor", "", target, 0, seed, n))
        for nfe in suite["nfe"]:
            cells += [Cell("spec", s, target, nfe, seed, n, sets) for s in suite["specs"] for sets in set_grid]
            cells += [Cell("peer", p, target, nfe, seed, n) for p in suite["peers"]]
    for target in suite["nll_targets"]:
        cells += [Cell("nll", s, target, 0, 0, int(suite["nll_points"]), sets) for s in suite["specs"]
                  for sets in set_grid]
    return cells


def parse_sweeps(items: list[str]) -> list[tuple]:
    """`kappa=0,0.5,1` `eta=0,1` -> every combination as ((kappa, 0), (eta, 0)), ...

    A NAME is a param or a run entry; values are separated by commas, or by `;` when they
    contain commas themselves (`grid=uniform;karras(rho = 7)`)."""
    axes = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--sweep {item!r} is not NAME=V1,V2,...", None, "Write e.g. --sweep kappa=0,0.5,1.")
        k, vs = item.split("=", 1)
        sep = ";" if ";" in vs else ","
        axes.append([(k.strip(), v.strip()) for v in vs.split(sep) if v.strip()])
    return [tuple(c) for c in itertools.product(*axes)] if axes else [()]


# ---------------------------------------------------------------------------------------
# One cell


def _reference(target, n: int, seed: int):
    """The reference draw every row of (target, seed) is compared with."""
    return target.sample(n, torch.Generator().manual_seed(10_000 + seed))


def quality(target, x: torch.Tensor, ref: torch.Tensor) -> dict:
    from dfc.metrics import energy_distance, fit_gaussian, gaussian_kl, gaussian_w2, mmd, mode_metrics, sliced_w2

    x = x.detach().double().cpu()
    if not bool(torch.isfinite(x).all()):
        return {"sliced_w2": math.inf, "mmd": math.inf, "energy": math.inf, "finite": False}
    out = {"sliced_w2": sliced_w2(x, ref), "mmd": mmd(x, ref), "energy": energy_distance(x, ref), "finite": True}
    gauss = target.gaussian
    if gauss is not None:
        m, c = fit_gaussian(x)
        tm, tc = (v.double().cpu().numpy() for v in gauss)
        out["gauss_kl"] = gaussian_kl(m, c, tm, tc)
        out["gauss_w2"] = gaussian_w2(m, c, tm, tc)
    master = getattr(target, "_master", {})
    if "means" in master and master["means"].shape[0] > 1:
        out.update(mode_metrics(x, master["means"], master["stds"]))
    return out


def run_cell(cell: Cell) -> dict:
    """Run one cell in this process; returns a flat record (never raises for a sampler failure)."""
    from dfc.targets import make_target

    torch.set_num_threads(1)  # cells run side by side in processes
    target = make_target(cell.target).to(dtype=torch.float32)
    ref = _reference(target, cell.samples, cell.seed).double()
    rec = {"kind": cell.kind, "name": cell.name, "label": cell.label, "target": cell.target,
           "nfe_budget": cell.nfe, "seed": cell.seed, "samples": cell.samples, "sets": dict(cell.sets)}
    try:
        if cell.kind == "floor":
            other = target.sample(cell.samples, torch.Generator().manual_seed(20_000 + cell.seed))
            rec.update(nfe=0, wall_s=0.0, estimator_s=0.0, **quality(target, other, ref))
        elif cell.kind == "peer":
            from dfc.peers import run_peer

            start = time.perf_counter()
            x, nfe = run_peer(cell.name, target, cell.samples, cell.nfe, cell.seed)
            rec.update(nfe=nfe, wall_s=time.perf_counter() - start, estimator_s=0.0, **quality(target, x, ref))
        elif cell.kind == "spec":
            rec.update(_run_spec(cell, target, ref))
        else:
            rec.update(_run_nll(cell))
    except DfcError as exc:
        rec.update(error=exc.message, sliced_w2=math.inf)
    return rec


def _compile(cell: Cell, run: dict):
    """The cell's spec; a sweep's NAME=VALUE is a run entry (clock, grid, fields, ...) or a param."""
    from dfc.compiler import compile_spec
    from dfc.runconfig import KEYS
    from dfc.spec import load_spec

    params = {k: str(v) for k, v in cell.sets if k not in KEYS}
    run = {k: str(v) for k, v in cell.sets if k in KEYS} | run
    return compile_spec(load_spec(cell.name), params, run)


def _run_spec(cell: Cell, target, ref) -> dict:
    from dfc.sample import simulate

    probe = _compile(cell, {"target": cell.target})
    steps = max(1, cell.nfe // probe.run.nfe_per_step - (1 if probe.run.denoise else 0))
    spec = _compile(cell, {"target": cell.target, "samples": str(cell.samples), "seed": str(cell.seed),
                           "steps": str(steps)})
    x, cost = simulate(spec, target)
    data = x if spec.run.denoise else x * spec.at("u", spec.t1)
    return {"nfe": cost["nfe"], "wall_s": cost["wall_s"], "estimator_s": cost["estimator_s"],
            "clock": spec.run.clock, "solver": spec.run.solver, **quality(target, data, ref)}


def _run_nll(cell: Cell) -> dict:
    """The exact NLL of the spec's flow-ODE twin (MATH §7), where s_p needs no population estimate."""
    from dfc.likelihood import ode_loglik, sp_source
    from dfc.sample import make_run_target

    spec = _compile(cell, {"target": cell.target})
    target = make_run_target(spec, dtype=torch.float64)
    source = sp_source(spec, target)
    if source is not None and source != "tracking" and getattr(source, "path", None) is not None:
        return {"nll": math.nan, "note": "needs a population estimate of s_p"}
    pts = target.sample(cell.samples, torch.Generator().manual_seed(30_000))
    r = ode_loglik(spec, target, pts, rtol=1e-4, atol=1e-4, source=source)
    nll = -r.logp
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / math.sqrt(len(nll))), "nfe": r.nfe,
            "wall_s": r.wall_s}


# ---------------------------------------------------------------------------------------
# Many cells, cached


def run_cells(cells: list[Cell], cache: Path, jobs: int = 1, progress=None) -> list[dict]:
    """Results of all cells: cached ones read back, missing ones computed and cached one by one."""
    from dfc.io import atomic_write_json

    cache.mkdir(parents=True, exist_ok=True)
    done, todo = {}, []
    for c in cells:
        f = cache / f"{c.key}.json"
        if f.exists():
            try:
                done[c.key] = json.loads(f.read_text())
                continue
            except json.JSONDecodeError:
                pass  # an unreadable cache file is recomputed
        todo.append(c)
    if progress:
        progress(len(done), len(cells))

    def finish(c: Cell, rec: dict):
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
        atomic_write_json(cache / f"{c.key}.json", rec)
        done[c.key] = rec
        if progress:
            progress(len(done), len(cells))

    if jobs <= 1:
        for c in todo:
            finish(c, run_cell(c))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_cell, c): c for c in todo}
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
    return [done[c.key] for c in cells]


def peers_available() -> bool:
    from dfc.peers import kdiffusion_sampling

    return kdiffusion_sampling() is not None


# ---------------------------------------------------------------------------------------
# Tables, plots, Pareto fronts


def frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    for col in ("sliced_w2", "mmd", "energy", "wall_s", "nfe", "estimator_s"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def summary(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean over seeds per (target, row, NFE budget): metric, actual NFE, wall time, samples/s."""
    runs = df[df["kind"].isin(["spec", "peer", "floor"])]
    g = runs.groupby(["target", "kind", "label", "nfe_budget"], dropna=False)
    out = g.agg(**{metric: (metric, "mean"), "nfe": ("nfe", "mean"), "wall_s": ("wall_s", "mean"),
                   "estimator_s": ("estimator_s", "mean"), "samples": ("samples", "first")}).reset_index()
    out["samples_per_s"] = out["samples"] / out["wall_s"].where(out["wall_s"] > 0)
    nll = df[df["kind"] == "nll"]
    if not nll.empty and "nll" in nll:
        out = out.merge(nll[["target", "label", "nll"]], on=["target", "label"], how="left")
    return out


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both cost (first) and error (second), by cost."""
    front, best = [], math.inf
    for cost, err, label in sorted(points, key=lambda p: (p[0], p[1])):
        if err < best:
            front.append((cost, err, label))
            best = err
    return front


def wide(summ: pd.DataFrame, target: str, metric: str = METRIC) -> pd.DataFrame:
    """One row per sampler, one column per NFE budget, plus NLL and the wall time at the largest NFE."""
    s = summ[summ["target"] == target]
    table = s[s["kind"] != "floor"].pivot_table(index="label", columns="nfe_budget", values=metric)
    floor = s[s["kind"] == "floor"][metric].mean()
    table.columns = [f"NFE {c}" for c in table.columns]
    last = s[s["kind"] != "floor"].sort_values("nfe_budget").groupby("label").last()
    table["wall s (max NFE)"] = last["wall_s"]
    table["KDE s (max NFE)"] = last["estimator_s"]
    if "nll" in s:
        table["NLL"] = s.groupby("label")["nll"].first()
    table = table.sort_values(table.columns[min(1, len(table.columns) - 1)])
    floor_row = pd.DataFrame({c: [floor if c.startswith("NFE") else math.nan] for c in table.columns}, index=["floor"])
    return pd.concat([floor_row, table])


def rich_table(table: pd.DataFrame, title: str):
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    t.add_column("sampler")
    for c in table.columns:
        t.add_column(str(c), justify="right")
    for label, row in table.iterrows():
        cells = ["" if (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}" for v in row.values]
        t.add_row(str(label), *cells, style="dim" if label == "floor" else None)
    return t


def plots(summ: pd.DataFrame, folder: Path, metric: str = METRIC) -> list[Path]:
    import matplotlib

    from dfc.io import atomic_save_figure
    from dfc.plot import line_plot

    out = []
    for target, s in summ.groupby("target"):
        rows = s[s["kind"] != "floor"]
        floor = s[s["kind"] == "floor"][metric].mean()
        for x, xlabel, name in (("nfe", "NFE", "nfe"), ("wall_s", "wall seconds", "wall")):
            series = {label: dict(zip(g[x], g[metric])) for label, g in rows.sort_values(x).groupby("label")}
            xs = {label: list(v) for label, v in series.items()}
            ys = {label: list(v.values()) for label, v in series.items()}
            all_x = sorted({v for vals in xs.values() for v in vals})
            xs["floor"], ys["floor"] = all_x, [floor] * len(all_x)
            fig = line_plot(xs, ys, xlabel, f"{metric} (lower is better)", f"{target}: {metric} against {xlabel}",
                            logx=True, logy=True)
            # diverged rows (coarse steps) would squash the rest: show 0.5× to 10× the floor
            ax = fig.axes[0]
            ax.set_ylim(0.5 * floor, 10 * floor)
            peer_labels = set(rows[rows["kind"] == "peer"]["label"])
            palette = matplotlib.colormaps["tab20"]
            for i, line in enumerate(ax.get_lines()):  # 20-odd rows: 20 colours, peers dashed, floor black
                label = line.get_label()
                line.set_color("black" if label == "floor" else palette(i % 20))
                line.set_linestyle("--" if label in peer_labels else ":" if label == "floor" else "-")
            fig.set_size_inches(11, 6)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1, fontsize=8, frameon=False)
            path = folder / f"{target}_{name}.png"
            atomic_save_figure(path, fig)
            out.append(path)
    return out


def write_results(df: pd.DataFrame, folder: Path) -> dict[str, Path]:
    from dfc.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    summ = summary(df)
    paths = {"csv": folder / "results.csv", "summary": folder / "summary.csv", "markdown": folder / "tables.md"}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    atomic_write_text(paths["summary"], summ.to_csv(index=False))
    md = []
    for target in summ["target"].unique():
        md.append(f"### {target} ({METRIC}, mean over seeds; lower is better)\n")
        md.append(wide(summ, target).to_markdown(floatfmt=".3f") + "\n")
        by_wall = summ[(summ["target"] == target) & (summ["kind"] != "floor")].sort_values("wall_s")
        front = pareto([(r.wall_s, r[METRIC], f"{r.label} @ NFE {r.nfe_budget}") for _, r in by_wall.iterrows()])
        ordered = by_wall[["label", "nfe_budget", "nfe", "wall_s", "samples_per_s", "estimator_s", METRIC]]
        md.append(f"Ordered by wall time: the fastest rows within 1.5× of the floor (at most 12; if none, "
                  f"the 12 best by {METRIC}):\n")
        floor = summ[(summ["target"] == target) & (summ["kind"] == "floor")][METRIC].mean()
        good = ordered[ordered[METRIC] <= 1.5 * floor].head(12)
        md.append((good if not good.empty else ordered.sort_values(METRIC).head(12))
                  .to_markdown(index=False, floatfmt=".3g") + "\n")
        md.append("Pareto front against wall time: " + "; ".join(f"{lab} ({e:.3f}, {c:.3g} s)" for c, e, lab in front)
                  + "\n")
    atomic_write_text(paths["markdown"], "\n".join(md))
    for p in plots(summ, folder):
        paths[p.stem] = p
    return paths


# ---------------------------------------------------------------------------------------
# RESULTS.md


def verdict(summ: pd.DataFrame, budgets=(4, 8, 16)) -> pd.DataFrame:
    """Per target and NFE: the best DiffFlow spec, the best peer, their metric and wall times."""
    rows = []
    for (target, nfe), s in summ[summ["kind"] != "floor"].groupby(["target", "nfe_budget"]):
        if nfe not in budgets:
            continue
        floor = summ[(summ["target"] == target) & (summ["kind"] == "floor")][METRIC].mean()
        spec = s[s["kind"] == "spec"].sort_values(METRIC).head(1)
        peer = s[s["kind"] == "peer"].sort_values(METRIC).head(1)
        if spec.empty:
            continue
        row = {"target": target, "NFE": nfe, "floor": floor, "best spec": spec["label"].iloc[0],
               "spec " + METRIC: spec[METRIC].iloc[0], "spec wall s": spec["wall_s"].iloc[0]}
        if not peer.empty:
            row.update({"best peer": peer["label"].iloc[0], "peer " + METRIC: peer[METRIC].iloc[0],
                        "peer wall s": peer["wall_s"].iloc[0],
                        "spec beats peer": bool(spec[METRIC].iloc[0] < peer[METRIC].iloc[0])})
        rows.append(row)
    return pd.DataFrame(rows)


def report(folder: Path, out: Path) -> Path:
    """benchmarks/RESULTS.md from the latest results in `folder` (and likelihood.md if present)."""
    from dfc.io import atomic_write_text

    csv = folder / "results.csv"
    if not csv.exists():
        raise ConfigError(f"no results at {csv}.", None, "Run `dfc bench --all` (or --quick) first.")
    df = frame(pd.read_csv(csv).to_dict("records"))
    summ = summary(df)
    v = verdict(summ)
    parts = ["# dfc benchmark results", "",
             f"Generated by `dfc bench --report` from `{csv.relative_to(ROOT) if csv.is_relative_to(ROOT) else csv}`; "
             f"reproduce with `dfc bench --all --jobs 2` then `dfc bench --report`. Quality is {METRIC} to a "
             f"fresh target draw (lower is better), the mean over seeds; the floor is the same metric between two "
             f"independent target draws of the same size. NFE counts score-field (denoiser) evaluations.", ""]
    if not v.empty:
        wins = v[v.get("spec beats peer", False) == True] if "spec beats peer" in v else v.iloc[0:0]  # noqa: E712
        parts += ["## The answer", ""]
        if "best peer" not in v:
            parts.append("Peers were not installed for this run: no peer comparison.")
        else:
            parts.append(f"A DiffFlow spec beats the best k-diffusion sampler in {len(wins)} of {len(v)} "
                         f"(target, NFE ≤ 16) cases. Where it wins, the wall-time price is the ratio below "
                         f"(the GAN part's KDE is O(N²) per evaluation).")
            for _, r in wins.iterrows():
                parts.append(f"- {r['target']}, {r['NFE']} NFE: **{r['best spec']}** {r['spec ' + METRIC]:.3f} vs "
                             f"{r['best peer']} {r['peer ' + METRIC]:.3f} (floor {r['floor']:.3f}), "
                             f"{r['spec wall s'] / max(r['peer wall s'], 1e-9):.0f}× the peer's wall time.")
        parts += ["", v.to_markdown(index=False, floatfmt=".3f"), ""]
        below = summ[(summ["kind"] == "spec") & summ.apply(
            lambda r: r[METRIC] < summ[(summ["target"] == r["target"]) & (summ["kind"] == "floor")][METRIC].mean(),
            axis=1)]
        if not below.empty:
            parts += [f"{len(below)} spec rows score below the floor. The floor compares two independent target "
                      "draws; samplers with a GAN part move their particles jointly (s_p is estimated from the "
                      "whole batch), and such interacting particles can match the target's empirical measure "
                      "more evenly than independent draws do. Their samples are not independent, so a score "
                      "below the floor measures an even spread, not better than perfect sampling.", ""]
    parts += ["## Tables", "", (folder / "tables.md").read_text() if (folder / "tables.md").exists() else ""]
    lik = RESULTS / "likelihood.md"
    if lik.exists():
        parts += ["## Likelihood (dfc nll)", "", lik.read_text()]
    overhead = RESULTS / "overhead.md"
    if overhead.exists():
        parts += ["## Native sampler overhead", "", overhead.read_text()]
    atomic_write_text(out, "\n".join(parts) + "\n")
    return out
