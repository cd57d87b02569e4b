"""`dfc train score | disc | gan`: learn fields from data (MATH §5, §8). A Typer sub-app.

Each command shows a progress bar with the loss and the throughput, writes its checkpoint
(safetensors + JSON header, `dfc.checkpoint`), `loss.png`, `train.json`, and a first look at what
it learned: samples with their metrics against held-out data (`metrics.json`, `samples.png`, and
for the 8×8 digits `grid.png`, an 8×8 grid of samples). `--resume` continues an interrupted run in
the same --out folder to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.table import Table

from dfc.clikit import THREADS_HELP, err_console, guard, out_console
from dfc.clikit import pairs as _pairs
from dfc.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Learn fields from data: score networks, discriminator stacks (Alg. 2), GAN generators (Alg. 1).")

TARGET_OPT = typer.Option(None, help="ring8, grid25, checkerboard, moons, swissroll, circles, digits.")
DATA_OPT = typer.Option(None, help="Train on the points of this .npy file instead (N × D).")
POINTS_OPT = typer.Option(20000, help="Training points drawn from a 2-D set's law (digits: its 1,500 training images).")
SEED_OPT = typer.Option(0, help="Seed (same seed, same weights; --resume reaches them too).")
DEVICE_OPT = typer.Option("cpu", help="cpu, cuda, cuda:1, ...")
RESUME_OPT = typer.Option(False, "--resume", help="Continue the interrupted run whose checkpoint is in --out.")
THREADS_OPT = typer.Option(None, "--threads", help=THREADS_HELP)


def _guard(fn):
    return guard(fn, "interrupted: the checkpoint holds the last finished step; continue with the same command "
                     "and --resume.")


def _device(device: str) -> str:
    from dfc.runconfig import check_device

    return check_device(device)


def _out_folder(out: Optional[Path], default: Path) -> Path:
    """The training folder (--out, else `default`), created and checked writable before any training."""
    from dfc.io import check_writable

    folder = Path(out) if out is not None else default
    check_writable(folder / "train.json")
    return folder


@contextmanager
def data_parallel(device: str, batch: int):
    """The torchrun world of this process (dfc.ddp; one process without torchrun), left on exit."""
    from dfc import ddp

    world = ddp.start(device)
    try:
        if batch < world.size:
            raise ConfigError(f"--batch {batch} cannot be split over the {world.size} processes torchrun started.",
                              None, f"Use a global batch of at least {world.size} (it is split across the processes).")
        yield world
    finally:
        ddp.stop()


def rank_progress(world, description: str, total: int, unit: str = "samples/s"):
    """The progress bar on rank 0; nothing on the other ranks."""
    from contextlib import nullcontext

    return progress_bar(description, total, unit) if world.main else nullcontext(None)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "samples/s"):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:>9,.0f} " + unit),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total, loss=float("nan"), rate=0.0)
        last = [0.0]

        def update(i, n, loss, rate):
            now = time.perf_counter()
            if now - last[0] > 0.1 or i >= n:  # a few updates a second are enough
                last[0] = now
                bar.update(task, completed=i, total=n, loss=loss, rate=rate)

        yield update


def _data(target: Optional[str], data: Optional[Path], points: int):
    from dfc.data import training_data

    if (target is None) == (data is None):
        raise ConfigError("give one of --target NAME or --data FILE.npy.")
    return training_data(target, data, points)


def _run_target_name(info: dict) -> str:
    return info["source"] if info.get("file") else info["name"]


def _moving_average(v: np.ndarray, w: int) -> np.ndarray:
    if len(v) < 2 * w:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = (c[w:] - c[:-w]) / w
    return np.concatenate([np.full(w - 1, np.nan), out])


def _loss_plot(folder: Path, series: dict, title: str, xlabel: str = "step", logy: bool = True) -> Path:
    from dfc.io import atomic_save_figure
    from dfc.plot import line_plot

    path = folder / "loss.png"
    atomic_save_figure(path, line_plot(None, series, xlabel, "loss", title, logy=logy))
    return path


def compare(x: torch.Tensor, info: dict, seed: int = 0) -> dict:
    """Sliced W2 and MMD of samples against held-out data, and their floor (another held-out draw, or
    for the digits training images against the held-out ones, of the same size)."""
    import torch

    from dfc.data import held_out
    from dfc.metrics import mmd, sliced_w2

    n = x.shape[0]
    ref = held_out(info, n, seed)
    if info["name"] == "digits" and not info.get("file"):
        from dfc.data import digits

        train = digits("train")
        other = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:ref.shape[0]]]
        x = x[: max(ref.shape[0], min(n, 4 * ref.shape[0]))]
    elif ref is None:  # a file: compare with its own points
        from dfc.data import training_data

        pts, _ = training_data(file=info["source"])
        g = torch.Generator().manual_seed(seed)
        ref = pts[torch.randint(pts.shape[0], (n,), generator=g)]
        other = pts[torch.randint(pts.shape[0], (n,), generator=g)]
    else:
        other = held_out(info, n, seed + 1)
    x = x.detach().cpu().float()
    return {"sliced_w2": sliced_w2(x, ref), "floor": sliced_w2(other, ref), "mmd": mmd(x, ref),
            "mmd_floor": mmd(other, ref), "reference": int(ref.shape[0]), "samples": int(x.shape[0])}


def pictures(folder: Path, x: torch.Tensor, info: dict, title: str) -> dict:
    import torch

    from dfc.data import law
    from dfc.io import atomic_save_figure
    from dfc.plot import image_grid, scatter_over_density

    out = {}
    arr = x.detach().cpu().float().numpy()
    if arr.shape[1] == 64:
        out["grid"] = folder / "grid.png"
        atomic_save_figure(out["grid"], image_grid(arr[:64], nrow=8, title=title))
    lw = None if info.get("file") or arr.shape[1] != 2 else law(info["name"])
    log_density = bounds = None
    if lw is not None:
        t64 = lw.to(dtype=torch.float64)
        log_density = lambda pts: t64.log_prob(torch.as_tensor(pts, dtype=torch.float64), 0.0).numpy()  # noqa: E731
        lo, hi = lw.bounds()
        bounds = ((lo[0], hi[0]), (lo[1], hi[1]))
    out["plot"] = folder / "samples.png"
    atomic_save_figure(out["plot"], scatter_over_density(arr, log_density, bounds, title))
    return out


def _table(title: str, rows: list[tuple[str, str]]) -> None:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, v)
    out_console.print(t)


def _sample_spec(spec_name: str, sets: dict, run: dict, folder: Path, progress_title: str):
    """`dfc run` of a spec (learned fields in `run`), outputs written to `folder`."""
    from dfc.sample import build, run as run_spec, write_outputs

    compiled = build(spec_name, sets, run)
    result = run_spec(compiled)
    paths = write_outputs(result, folder, whole=False)  # the training folder holds the checkpoint too
    return result, paths


# ---------------------------------------------------------------------------------------
# dfc train score


@app.command("score")
def score_cmd(
    target: Optional[str] = TARGET_OPT,
    data: Optional[Path] = DATA_OPT,
    points: int = POINTS_OPT,
    steps: int = typer.Option(6000, help="Optimiser steps."),
    batch: int = typer.Option(512, help="Batch size."),
    lr: float = typer.Option(2e-3, help="Adam learning rate (warm-up, then cosine decay to 5%)."),
    hidden: int = typer.Option(256, help="Width of the residual MLP."),
    depth: int = typer.Option(3, help="Residual blocks."),
    ema: float = typer.Option(0.999, help="EMA decay of the weights used for sampling."),
    save_every: int = typer.Option(1000, help="Checkpoint every this many steps."),
    seed: int = SEED_OPT,
    resume: bool = RESUME_OPT,
    device: str = DEVICE_OPT,
    preview: int = typer.Option(2000, help="Samples of the reverse VE SDE on the learned score for the first look "
                                           "(0: none)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/score-NAME)."),
    threads: Optional[int] = THREADS_OPT,
):
    """Denoising score matching with EDM preconditioning: OUT/score.safetensors, loss.png, train.json."""

    def body():
        from dfc.io import atomic_write_json
        from dfc.threads import use_threads
        from dfc.train import ScoreConfig, train_score

        x, info = _data(target, data, points)
        cfg = ScoreConfig(steps=steps, batch=batch, lr=lr, hidden=hidden, depth=depth, ema=ema, seed=seed,
                          save_every=save_every)
        cfg.check()
        folder = _out_folder(out, Path("runs") / f"score-{info['name']}")
        with data_parallel(device, batch) as world:
            use_threads(batch // world.size * hidden, threads)
            with rank_progress(world, f"score on {info['name']}", steps) as update:
                log = train_score(x, info, folder, cfg, resume=resume, device=_device(world.device(device)),
                                  progress=update, world=world)
        if not world.main:
            return
        losses = np.asarray(log.pop("losses"))
        _loss_plot(folder, {"EDM loss": losses, "moving average (100)": _moving_average(losses, 100)},
                   f"denoising score matching on {info['name']}")
        rows = [("data", f"{info['name']} ({info['n']} × {info['dim']}, sha256 {info['sha256']})"),
                ("steps × batch", f"{cfg.steps} × {cfg.batch}"),
                ("final loss (mean of the last 200 steps)", f"{log['final_loss']:.4f}"),
                ("wall time", f"{log['wall_s']:.1f} s"), ("throughput", f"{log['samples_per_s']:,.0f} samples/s")]
        if preview > 0:
            run = {"target": _run_target_name(info), "fields": f'learned(score = "{log["path"]}")',
                   "samples": str(preview), "steps": "64", "clock": "sigma", "denoise": "true",
                   "seed": str(seed), "device": device}
            result, _ = _sample_spec("ve_sde", {}, run, folder, "preview")
            m = result.metrics
            log["preview"] = {"spec": "ve_sde (64 Euler steps in the sigma clock, Tweedie's last step)",
                              **{k: m[k] for k in ("sliced_w2", "floor", "mmd", "mmd_floor")}}
            rows.append(("ve_sde sliced W2 (floor)", f"{m['sliced_w2']:.4f} ({m['floor']:.4f})"))
        atomic_write_json(folder / "train.json", log)
        _table(f"dfc train score: {log['path']}", rows)

    _guard(body)


# ---------------------------------------------------------------------------------------
# dfc train disc


@app.command("disc")
def disc_cmd(
    spec: str = typer.Argument(..., help="The spec whose particles the stack drives (e.g. diffusion_gan)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a param: --set kappa=0.5."),
    run_: Optional[List[str]] = typer.Option(None, "--run", help="A run entry of the spec: --run clock=sigma2."),
    steps: Optional[int] = typer.Option(None, help="Time steps (networks) of the stack; default the spec's."),
    target: Optional[str] = TARGET_OPT,
    data: Optional[Path] = DATA_OPT,
    points: int = POINTS_OPT,
    score: Optional[Path] = typer.Option(None, help="s_Q from this score checkpoint (default: the data's exact "
                                                    "law, or the ideal denoiser of the training points)."),
    variant: str = typer.Option("independent", help="independent (one network per step, Alg. 2) | shared d(x, t)."),
    iters: int = typer.Option(300, help="Optimiser steps per time step."),
    batch: int = typer.Option(1024, help="Real and fake points per optimiser step (each)."),
    lr: float = typer.Option(2e-3, help="Adam learning rate."),
    hidden: int = typer.Option(128, help="Width of each discriminator."),
    depth: int = typer.Option(2, help="Residual blocks of each discriminator."),
    weight_decay: float = typer.Option(0.0, help="Adam weight decay."),
    warm_start: bool = typer.Option(True, "--warm-start/--no-warm-start",
                                    help="Start d_k from d_(k-1)'s weights (the paper starts each afresh)."),
    particles: int = typer.Option(4000, help="Particles simulated during training."),
    seed: int = SEED_OPT,
    resume: bool = RESUME_OPT,
    device: str = DEVICE_OPT,
    samples: int = typer.Option(4000, help="Samples of Algorithm 3 for the first look (0: none)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/disc-SPEC-NAME)."),
    threads: Optional[int] = THREADS_OPT,
):
    """Algorithm 2: a time-indexed discriminator stack on a spec's grid; OUT/stack.safetensors."""

    def body():
        from dfc.data import law
        from dfc.ddp import from_env
        from dfc.io import atomic_write_json
        from dfc.learned import load_score, resolve, score_record
        from dfc.sample import build
        import torch

        from dfc.targets import DataSet
        from dfc.threads import use_threads
        from dfc.train import DiscConfig, train_disc

        x, info = _data(target, data, points)
        sets = _pairs(set_, "--set")
        dev = _device(from_env().device(device))  # under torchrun on CUDA: this rank's GPU
        run = {**_pairs(run_, "--run"), "target": _run_target_name(info), "device": dev}
        if steps is not None:
            run["steps"] = str(steps)
        compiled = build(spec, sets, run)
        cfg = DiscConfig(variant=variant, iters=iters, batch=batch, lr=lr, hidden=hidden, depth=depth,
                         weight_decay=weight_decay, warm_start=warm_start, particles=particles, seed=seed)
        cfg.check()
        use_threads(max(batch // from_env().size * hidden, particles * info["dim"]), threads)
        exact = law(info["name"]) if not info.get("file") else None
        if exact is None:
            exact = DataSet(x, name=info["name"])  # the ideal denoiser of the training points
        exact = exact.to(device=dev, dtype=torch.float32)
        if score is not None:
            score_path = resolve(score)
            fields = load_score(score_path, dev, torch.float32, data_target=exact)
            from dfc.data import same_data

            why = same_data(getattr(fields, "info", info), info["name"] if not info.get("file") else info["source"],
                            exact)
            if why:
                raise ConfigError(f"the score {score_path} does not fit this data: {why}.")
        else:
            score_path, fields = None, exact
        folder = _out_folder(out, Path("runs") / f"disc-{compiled.name}-{info['name']}")
        K = len(compiled.grid()) - 1
        with data_parallel(device, batch) as world, rank_progress(world, f"Alg. 2 on {compiled.name}, {K} steps",
                                                                   K * iters) as update:
            log = train_disc(compiled, x, info, fields, score_record(score_path, info["name"]), folder, cfg,
                             resume=resume, device=dev, progress=update, world=world)
        if not world.main:
            return
        log.pop("particles")
        _loss_plot(folder, {"logistic loss at the end of each step": np.asarray(log["losses"]),
                            "accuracy": np.asarray(log["accuracy"])}, f"Alg. 2 on {compiled.name}",
                   xlabel="time step k", logy=False)
        rows = [("spec", f"{compiled.name} ({K} steps, clock {compiled.run.clock})"),
                ("variant", cfg.variant), ("data", f"{info['name']} ({info['n']} × {info['dim']})"),
                ("s_Q", "learned: " + str(score_path) if score_path else "exact"),
                ("wall time", f"{log['wall_s']:.1f} s")]
        if samples > 0:
            fields_entry = (f'learned(score = "{score_path}")' if score_path else "exact") + \
                           f' + disc(path = "{log["path"]}")'
            result, _ = _sample_spec(spec, sets, {**run, "fields": fields_entry, "samples": str(samples),
                                                  "solver": "euler", "seed": str(seed + 1)}, folder, "Alg. 3")
            m = result.metrics
            log["alg3"] = {k: m[k] for k in ("sliced_w2", "floor", "mmd", "mmd_floor", "wall_s", "nfe")}
            rows.append(("Alg. 3 sliced W2 (floor)", f"{m['sliced_w2']:.4f} ({m['floor']:.4f})"))
            rows.append(("Alg. 3 MMD (floor)", f"{m['mmd']:.4f} ({m['mmd_floor']:.4f})"))
        atomic_write_json(folder / "train.json", log)
        _table(f"dfc train disc: {log['path']}", rows)

    _guard(body)


# ---------------------------------------------------------------------------------------
# dfc train gan


@app.command("gan")
def gan_cmd(
    spec: str = typer.Argument(..., help="A GAN-flow spec: vanilla_gan (β = D), ns_gan (1 − D), diffflow_gan (1)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a param: --set sigma0=0.2."),
    target: Optional[str] = TARGET_OPT,
    data: Optional[Path] = DATA_OPT,
    points: int = POINTS_OPT,
    iters: int = typer.Option(3000, help="Generator updates (iteration i runs at t_i, spread over the spec's time)."),
    batch: int = typer.Option(512, help="Batch size."),
    d_steps: int = typer.Option(2, help="Discriminator updates per generator update."),
    eta: float = typer.Option(0.0, help="Particle step η of x' = x + η β ∇d (0: the spec's (t1 − t0)/steps)."),
    lr_g: float = typer.Option(1e-3, help="Generator learning rate (Adam)."),
    lr_d: float = typer.Option(2e-3, help="Discriminator learning rate (Adam)."),
    hidden: int = typer.Option(128, help="Width of both networks."),
    depth: int = typer.Option(2, help="Residual blocks of both networks."),
    latent: int = typer.Option(8, help="Latent dimension of the generator."),
    save_every: int = typer.Option(500, help="Checkpoint every this many iterations."),
    seed: int = SEED_OPT,
    resume: bool = RESUME_OPT,
    device: str = DEVICE_OPT,
    samples: int = typer.Option(4000, help="Generator samples for the first look."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/gan-SPEC-NAME)."),
    threads: Optional[int] = THREADS_OPT,
):
    """Algorithm 1: a generator regressed onto particles moved by x' = x + η β ∇d; OUT/gan.safetensors."""

    def body():
        from dfc.io import atomic_save_npy, atomic_write_json
        from dfc.sample import build
        import torch

        from dfc.ddp import from_env
        from dfc.threads import use_threads
        from dfc.train import GanConfig, check_gan_flow, load_generator, train_gan

        if from_env().size > 1:
            raise ConfigError(f"dfc train gan runs in one process; torchrun started {from_env().size}.", None,
                              "Run it without torchrun (train score and train disc are data-parallel).")
        x, info = _data(target, data, points)
        compiled = build(spec, _pairs(set_, "--set"), {"target": _run_target_name(info), "device": _device(device)})
        cfg = GanConfig(iters=iters, batch=batch, d_steps=d_steps, eta=eta, lr_g=lr_g, lr_d=lr_d, hidden=hidden,
                        depth=depth, latent=latent, seed=seed, save_every=save_every)
        cfg.check()
        check_gan_flow(compiled)  # before the progress bar: a spec that is no GAN flow is refused at once
        use_threads(batch * hidden, threads)
        folder = _out_folder(out, Path("runs") / f"gan-{compiled.name}-{info['name']}")
        with progress_bar(f"Alg. 1 on {compiled.name}", iters) as update:
            log = train_gan(compiled, x, info, folder, cfg, resume=resume, device=device, progress=update)
        ld, lg = np.asarray(log.pop("loss_d")), np.asarray(log.pop("loss_g"))
        _loss_plot(folder, {"discriminator (logistic)": _moving_average(ld, 50),
                            "generator regression ½‖G − x'‖²": _moving_average(lg, 50)},
                   f"Alg. 1 on {compiled.name} (moving averages of 50)", xlabel="iteration")
        g, _ = load_generator(log["path"], device)
        with torch.no_grad():
            z = torch.randn(samples, g.latent, generator=torch.Generator().manual_seed(seed + 1)).to(device)
            xs = g(z).cpu()
        metrics = compare(xs, info, seed)
        atomic_save_npy(folder / "samples.npy", xs.numpy().astype(np.float32))
        pictures(folder, xs, info, f"Alg. 1 ({compiled.name}) on {info['name']}: sliced W2 "
                                    f"{metrics['sliced_w2']:.3f} (floor {metrics['floor']:.3f})")
        atomic_write_json(folder / "metrics.json", metrics)
        atomic_write_json(folder / "train.json", {**log, "metrics": metrics, "data": info})
        _table(f"dfc train gan: {log['path']}", [
            ("spec", f"{compiled.name} (η = {log['eta']:g})"), ("data", f"{info['name']} ({info['n']} × {info['dim']})"),
            ("iterations × batch", f"{iters} × {batch}"), ("wall time", f"{log['wall_s']:.1f} s"),
            ("sliced W2 (floor)", f"{metrics['sliced_w2']:.4f} ({metrics['floor']:.4f})"),
            ("MMD (floor)", f"{metrics['mmd']:.4f} ({metrics['mmd_floor']:.4f})")])

    _guard(body)


__all__ = ["app", "compare", "pictures", "progress_bar"]

