"""`dfc nll`: points to score, the exact NLL and the ELBO, and the files a person reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from dfc.compiler import CompiledSpec
from dfc.errors import DataError
from dfc.likelihood import ode_loglik, sde_elbo, sp_source


@dataclass
class LikelihoodRun:
    spec: CompiledSpec
    points: torch.Tensor
    target: object
    logp: torch.Tensor
    elbo: torch.Tensor | None
    record: dict


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std() / math.sqrt(x.shape[0])) if x.shape[0] > 1 else 0.0


def load_points(path: Path, dim: int, dtype, device) -> torch.Tensor:
    from dfc.targets import load_npy

    pts = load_npy(path).points.to(dtype=dtype, device=device)  # a finite 2-D array, or a DataError
    if pts.shape[1] != dim:
        raise DataError(f"{path}: points have {pts.shape[1]} coordinates, the target has {dim}.", None,
                        "Score points of the target's dimension.")
    return pts


DEFAULT_POINTS = 1000  # target draws `dfc nll` scores without --data and --points


def likelihood_run(spec: CompiledSpec, *, data: Path | None, n_points: int | None, rtol: float, atol: float,
                   divergence: str, probes: int, elbo: bool, elbo_steps: int, elbo_scale: float,
                   seed: int, prefer_estimate: bool = False, progress=None) -> LikelihoodRun:
    """Score the points: `n_points` target draws (default DEFAULT_POINTS), or the first `n_points` of `data` (default
    all); `progress(task, fraction)` is told of "nll" and "elbo" as they advance."""
    from dfc.sample import generator_for, make_fields, make_run_target

    target = make_run_target(spec, dtype=torch.float64)
    fields = make_fields(spec, target)  # the target itself, or a learned score
    if data is not None:
        points = load_points(data, target.dim, target.dtype, target.device)
        if n_points is not None and n_points > len(points):
            raise DataError(f"{data}: --points {n_points}, and the file holds {len(points)} points.", None,
                            f"Use --points {len(points)} or fewer, or leave it out to score them all.")
        points = points[:n_points]  # None: all of them
    else:
        points = target.sample(n_points or DEFAULT_POINTS, generator_for(spec.run.device, seed + 17))
    source = sp_source(spec, target, seed=seed, prefer_estimate=prefer_estimate)
    report = (lambda task: (lambda f: progress(task, f))) if progress is not None else (lambda task: None)
    exact = ode_loglik(spec, target, points, rtol=rtol, atol=atol, method=divergence, probes=probes, seed=seed,
                       source=source, progress=report("nll"), fields=fields)
    d = points.shape[1]
    nll, nll_se = _mean_se(-exact.logp)
    record = {
        "spec": spec.name, "points": int(points.shape[0]), "dim": d,
        "source": str(data) if data is not None else f"{spec.run.describe()['target']} draws",
        "nll": nll, "nll_se": nll_se, "bpd": nll / (d * math.log(2)), "bpd_se": nll_se / (d * math.log(2)),
        "nfe": exact.nfe, "wall_s": exact.wall_s, "divergence": exact.divergence, "s_p": exact.sp,
        "fields": spec.run.describe()["fields"],
        "rtol": rtol, "atol": atol, "seed": seed,
    }
    # the target's own log-density at the points (the model's ideal is log Q_T)
    sigma_T, u_T = spec.at("sigma", spec.t1), spec.at("u", spec.t1)
    ideal = target.log_prob(points * u_T, sigma_T) + d * math.log(u_T)
    record["target_nll"], record["target_nll_se"] = _mean_se(-ideal)
    record["gap_to_target"] = float((ideal - exact.logp).mean())
    lower = None
    if elbo:
        res = sde_elbo(spec, target, points, steps=elbo_steps, scale=elbo_scale, method=divergence, seed=seed,
                       source=source, progress=report("elbo"), fields=fields)
        lower = res.logp
        record["elbo"], record["elbo_se"] = _mean_se(res.logp)
        record["elbo_nfe"], record["elbo_wall_s"], record["elbo_scale"] = res.nfe, res.wall_s, elbo_scale
        record["elbo_steps"] = elbo_steps
    return LikelihoodRun(spec, points, target, exact.logp, lower, record)


NLL_FILES = ("nll.json", "nll.png")  # every file an nll folder may hold


def write_likelihood(run: LikelihoodRun, out) -> dict[str, Path]:
    """nll.json (the record, with every point's NLL) and, for 2-D points, nll.png, written as one set:
    the folder `out` is replaced as a whole (dfc.io.replace_folder), so it holds the complete old set
    or the complete new one at every moment; a folder holding other files is refused."""
    from dfc.io import figure_bytes, json_bytes, replace_folder
    from dfc.plot import scatter_over_density

    record = dict(run.record)
    record["per_point_nll"] = (-run.logp).cpu().tolist()
    files = {"nll.json": json_bytes(record, "nll.json")}
    if run.points.shape[1] == 2:
        files["nll.png"] = figure_bytes(_nll_figure(run, scatter_over_density), "nll.png")
    paths = replace_folder(out, files, NLL_FILES)
    return {{"nll.json": "record", "nll.png": "plot"}[name]: path for name, path in paths.items()}


def _nll_figure(run: LikelihoodRun, scatter_over_density):
    """The points coloured by their NLL, over the target's density."""
    pts = run.points.cpu().numpy()
    lo, hi = run.target.bounds()
    t64 = run.target.to(device="cpu", dtype=torch.float64)
    fig = scatter_over_density(pts, lambda p: t64.log_prob(torch.as_tensor(p), 0.0).numpy(),
                               ((lo[0], hi[0]), (lo[1], hi[1])),
                               f"{run.spec.name}: NLL {run.record['nll']:.3f} ± {run.record['nll_se']:.3f} nats")
    ax = fig.axes[0]
    for coll in list(ax.collections):
        if coll.get_offsets().shape[0] == pts.shape[0]:
            coll.remove()
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=(-run.logp).cpu().numpy(), s=6, cmap="magma")
    fig.colorbar(sc, ax=ax, label="NLL (nats)")
    return fig


def print_likelihood(run: LikelihoodRun, paths, console) -> None:
    from rich.table import Table

    r = run.record
    table = Table(title=f"dfc nll {r['spec']}", header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("points", f"{r['points']} × {r['dim']} ({r['source']})")
    table.add_row("NLL, flow-ODE twin", f"{r['nll']:.4f} ± {r['nll_se']:.4f} nats ({r['bpd']:.4f} bits/dim)")
    table.add_row("target's own NLL", f"{r['target_nll']:.4f} ± {r['target_nll_se']:.4f} nats")
    if "elbo" in r:
        table.add_row(f"−ELBO of the SDE (a = {r['elbo_scale']:g}·ν s_p)", f"{-r['elbo']:.4f} ± {r['elbo_se']:.4f} nats")
    table.add_row("divergence / s_p", f"{r['divergence']} / {r['s_p']}")
    table.add_row("NFE / wall time", f"{r['nfe']} / {r['wall_s']:.2f} s")
    console.print(table)
    for name, p in paths.items():
        console.print(f"  {name}: {p}", highlight=False)


