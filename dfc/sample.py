"""`dfc run`: compile a spec, draw from its prior, integrate, measure, write the outputs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dfc.compiler import CompiledSpec, compile_spec
from dfc.errors import ConfigError, LimitError
from dfc.fields import Drift, make_estimator
from dfc.spec import SpecIR, load_spec

DTYPE = torch.float32


@dataclass
class RunResult:
    spec: CompiledSpec
    samples: torch.Tensor
    metrics: dict
    target: object = field(repr=False)


def build(spec_path: str | Path | SpecIR, sets: dict | None = None, run: dict | None = None) -> CompiledSpec:
    ir = spec_path if isinstance(spec_path, SpecIR) else load_spec(spec_path)
    return compile_spec(ir, sets, run)


def make_run_target(spec: CompiledSpec, dtype=DTYPE):
    from dfc.targets import make_target

    from dfc.data import run_target

    cfg = spec.run
    # a relative .npy path is read where it was written: beside the spec file that names it (up the
    # extends chain), or, given on the command line or in Python, in the current folder
    written = cfg.spans.get("target")
    base = Path(written.file).parent if written is not None and written.file and Path(written.file).exists() else None
    try:
        target = None if cfg.target_options else run_target(cfg.target)  # moons, swissroll, circles, digits
        if target is None:
            target = make_target(cfg.target, dict(cfg.target_options), base_dir=base)
    except ConfigError as exc:
        if exc.message.startswith("unknown target"):
            from dfc.data import CURVES
            from dfc.spec import did_you_mean
            from dfc.targets import TARGETS

            exc = ConfigError(exc.message.rstrip(".") + "; or a data set moons, swissroll, circles, digits.",
                              exc.span, did_you_mean(cfg.target, TARGETS + CURVES + ("digits",)))
        if exc.span is None and cfg.spans.get("target") is not None:
            raise ConfigError(exc.message, cfg.spans["target"], exc.hint) from None
        raise exc from None  # the amended error (a bare `raise` would re-raise the original)
    return target.to(device=cfg.device, dtype=dtype)


def make_fields(spec: CompiledSpec, target):
    """What the drift scores: the target itself (exact fields) or a learned score checkpoint, checked
    against the run's data (dimension, data set) with the `fields` entry's place on any mismatch."""
    ckpt = spec.run.score_ckpt
    if ckpt is None:
        return target
    from dfc.learned import resolve

    return learned_fields(spec, target, resolve(ckpt, spec), spec.run.spans.get("fields"))


def learned_fields(spec: CompiledSpec, target, path: Path, span=None):
    """The learned score checkpoint at `path` as the drift's fields, checked against `target`'s data."""
    from dfc.errors import DataError
    from dfc.learned import LearnedScore, load_score

    try:
        learned = load_score(path, spec.run.device, target.dtype, data_target=target)
    except (DataError, LimitError) as exc:
        raise type(exc)(exc.message, span, exc.hint) from None
    if learned.dim != target.dim:
        raise ConfigError(f"the learned score {path} is {learned.dim}-dimensional, the target {target.dim}-dimensional.",
                          span, "Train the score on this target.")
    if isinstance(learned, LearnedScore):
        from dfc.data import same_data

        why = same_data(learned.info, spec.run.describe()["target"], target)
        if why:
            raise DataError(f"the learned score {path} does not match this run: {why}.", span,
                            "Run on the data it was trained on (--target), or train a score on this target.")
    return learned


def make_gan_field(spec: CompiledSpec, target):
    """The run's source of the GAN field: a population estimate of s_p (dfc.fields.make_estimator), or a
    learned discriminator stack (`+ disc(path = ...)`, Algorithm 3) checked against the run."""
    cfg = spec.run
    if cfg.estimator != "disc":
        return make_estimator(spec, target, prior_moments(spec, target) if cfg.estimator == "closed" else None)
    from dfc.learned import load_stack, resolve

    path = resolve(dict(cfg.estimator_options)["path"], spec)
    return load_stack(path, spec, target, cfg.device, cfg.spans.get("fields"))


def prior_moments(spec: CompiledSpec, target) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of p_0 (for the closed-form s_p); needs a Gaussian target for `prior target`."""
    d = target.dim
    kw = {k: float(v.xreplace(spec.params)) for k, v in spec.ir.prior.kwargs}
    if spec.ir.prior.kind == "normal":
        return np.full(d, kw["mean"]), kw["scale"] ** 2 * np.eye(d)
    gauss = target.gaussian
    if gauss is None:
        return None
    m, s = (v.detach().cpu().double().numpy() for v in gauss)
    u0, s0 = spec.at("u", spec.t0), spec.at("sigma", spec.t0)
    return m / u0, (s + s0**2 * np.eye(d)) / u0**2


def sample_prior(spec: CompiledSpec, target, n: int, generator: torch.Generator) -> torch.Tensor:
    """x_0 ~ p_0: `normal(mean, scale)`, or `target`: exactly Q_0, the law of (Y + σ(t0) ε)/u(t0)."""
    prior = spec.ir.prior
    dev, dt = target.device, target.dtype
    if prior.kind == "normal":
        kw = {k: float(v.xreplace(spec.params)) for k, v in prior.kwargs}
        if not (math.isfinite(kw["scale"]) and kw["scale"] > 0 and math.isfinite(kw["mean"])):
            raise ConfigError(f"prior normal(mean = {kw['mean']:g}, scale = {kw['scale']:g}) needs a finite mean "
                              f"and a scale > 0.", prior.span)
        z = torch.randn((n, target.dim), generator=generator, dtype=dt, device=dev)
        return z.mul_(kw["scale"]).add_(kw["mean"])
    y = target.sample(n, generator)
    eps = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
    return (y + spec.at("sigma", spec.t0) * eps) / spec.at("u", spec.t0)


MEMORY_FACTOR = 16  # float32 copies of the particles the sampler and its metrics hold at once, at most


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable of /proc/meminfo, else psutil), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer: no check
        return None


def check_memory(n: int, dim: int, span=None, what: str = "samples") -> None:
    """Refuse, before allocating, a particle cloud whose sampler would not fit in memory:
    N × D × 4 bytes × MEMORY_FACTOR against the memory available."""
    need = int(n) * int(dim) * 4 * MEMORY_FACTOR
    have = available_memory()
    if have is not None and need > have:
        fit = max(2, have // (int(dim) * 4 * MEMORY_FACTOR))
        raise LimitError(f"{n:,} {what} in {dim} dimensions need about {need / 2**30:.1f} GiB "
                         f"({n:,} × {dim} × 4 bytes × {MEMORY_FACTOR} working copies), and {have / 2**30:.1f} GiB "
                         f"of memory is available.", span, f"Use at most about {fit:,} {what} (--samples).")


def generator_for(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def simulate(spec: CompiledSpec, target, n: int | None = None, progress=None, x0: torch.Tensor | None = None,
             normals=None, fields=None, seed: int | None = None) -> tuple[torch.Tensor, dict]:
    """Integrate the spec's SDE from its prior. Returns the samples and cost figures.

    `fields`: what the drift scores (default `make_fields`: the target, or the run's learned score);
    any object with the target's `score(y, sigma)`, e.g. a model (dfc.models.ModelField).
    `seed`: the run's seed unless given (the prior and the noise)."""
    cfg = spec.run
    n = n or cfg.samples
    seed = cfg.seed if seed is None else seed
    device = str(target.device)
    gen = generator_for(device, seed)
    if x0 is None:
        if device == "cpu":
            check_memory(n, target.dim, cfg.spans.get("samples"))
        x0 = sample_prior(spec, target, n, gen)
    estimator = make_gan_field(spec, target)
    drift = Drift(spec, make_fields(spec, target) if fields is None else fields, estimator)
    ts = spec.grid()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        x = integrate(drift, x0, ts, gen, seed, normals, progress)
        if cfg.denoise:
            x = drift.denoise(x, float(ts[-1]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return x, {"wall_s": wall, "nfe": drift.nfe, "steps": cfg.steps, "estimator_s": drift.estimator_s}


def integrate(drift: Drift, x0: torch.Tensor, ts: np.ndarray, gen: torch.Generator, seed: int, normals=None,
              progress=None, record=None) -> torch.Tensor:
    """x0 at ts[0] carried to ts[-1] by the run's solver and backend (dfc.solvers.solve; MATH §9: in the
    run's clock). `record(i, x)` (native only) sees the particles at every grid time."""
    from dfc.solvers import Grid, Terms, solve_run

    return solve_run(drift.spec, Terms(drift), x0, Grid.of(drift.spec, ts), generator=gen, seed=seed,
                     normals=normals, progress=progress, record=record)


FLOOR_DRAWS = 4  # independent target draws for the floor (its mean and spread)


def evaluate(spec: CompiledSpec, target, samples: torch.Tensor, metrics: str = "auto", progress=None) -> dict:
    """The samples' distance to a fresh target draw (the reference), and its floor: the same
    metric between FLOOR_DRAWS further independent target draws of the same size and that
    reference (mean `floor`, spread `floor_sd`; `mmd_floor`, `mmd_floor_sd`, ... likewise).

    `metrics` is the level (dfc.floors): "full" (sliced W2, exact MMD and energy distance),
    "fast" (sliced W2, block MMD and energy with standard errors), "none", or "auto" (full up
    to dfc.floors.FULL_MAX samples, fast above). Every metric comes with its standard error
    (`sliced_w2_se`, `mmd2_se`, `mmd_se`, ...; None where it has none). The floor depends only
    on the target, N, the seed and the level: it is cached on disk (dfc.floors) and reused.
    `progress(description, fraction)` is called before each metric and at the end (1.0).
    The cost figures `metrics_s`, `floor_s` (0 when cached) and `floor_cached` are included."""
    from dfc import floors

    cfg = spec.run
    n = samples.shape[0]
    level = floors.resolve_level(metrics, n)
    start = time.perf_counter()
    out: dict = {"metrics_level": level}
    if level == "none":
        return {**out, "metrics_s": 0.0, "floor_s": 0.0, "floor_cached": False}
    gen = generator_for(cfg.device, cfg.seed + 1_000_003)
    ref = target.sample(n, gen)
    # compare in data space: x_T is scaled by u(T)
    data = samples if cfg.denoise else samples * spec.at("u", spec.t1)
    key = floors.floor_key(ref, n, cfg.seed, level, FLOOR_DRAWS)
    floor = floors.load_floor(key)
    total = 3 * (1 + (FLOOR_DRAWS if floor is None else 0))
    done = [0]

    def tick(what: str) -> None:
        if progress is not None:
            progress(f"{level} metrics: {what}", done[0] / total)
        done[0] += 1

    scales = floors.reference_scales(ref)  # one kernel for the run and its floor, made once
    out.update(floors.measure(data, ref, level, tick, scales=scales))
    floor_start = time.perf_counter()
    cached = floor is not None
    if not cached:
        floor = floors.compute_floor(target, ref, gen, FLOOR_DRAWS, level, tick, scales)
        floors.store_floor(key, floor)
    out.update(floor)
    out.update(floor_s=0.0 if cached else time.perf_counter() - floor_start, floor_cached=cached,
               metrics_s=time.perf_counter() - start)
    if progress is not None:
        progress(f"{level} metrics: done", 1.0)
    # no standard error (NaN) is None: metrics.json holds finite numbers only
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def run(spec: CompiledSpec, progress=None, metrics: str = "auto", metrics_progress=None,
        threads: int | None = None) -> RunResult:
    """Sample the spec (`progress(step)` after each step), then evaluate the samples at the
    `metrics` level (`metrics_progress(description, fraction)`, see `evaluate`). `threads`: torch's
    thread count (None: chosen by the size of the particle batch, dfc.threads)."""
    from dfc import floors
    from dfc.threads import use_threads

    floors.resolve_level(metrics, 0)  # a bad level fails before sampling
    target = make_run_target(spec)
    if target.dim < 1:
        raise ConfigError("the target has no dimensions.")
    use_threads(spec.run.samples * target.dim, threads)
    x, cost = simulate(spec, target, progress=progress)
    record = {"spec": spec.name, **cost, **evaluate(spec, target, x, metrics, metrics_progress),
              "samples": int(x.shape[0]), "dim": int(x.shape[1]), "seed": spec.run.seed,
              "run": spec.run.describe(), "params": {str(k): v for k, v in spec.params.items()}}
    return RunResult(spec, x, record, target)


RUN_FILES = ("samples.npy", "metrics.json", "samples.png", "grid.png")  # every file a run folder may hold


def check_out_folder(out: str | Path) -> Path:
    """Before sampling: `out` can be written and holds nothing but an earlier run's outputs (dfc.io)."""
    from dfc.io import check_set_folder

    return check_set_folder(out, RUN_FILES)


def render_outputs(result: RunResult) -> dict[str, bytes]:
    """The bytes of samples.npy (N×D float32), metrics.json, samples.png (the samples over the target's
    density; the first two coordinates in higher dimension) and, for 8×8 images, grid.png."""
    from dfc.io import figure_bytes, json_bytes, npy_bytes
    from dfc.plot import scatter_over_density

    x = result.samples.detach().cpu().float().numpy()
    target = result.target
    log_density = bounds = None
    if target.dim == 2:  # the samples over the target's density; first two coordinates otherwise
        t64 = target.to(device="cpu", dtype=torch.float64)
        log_density = lambda pts: t64.log_prob(torch.as_tensor(pts, dtype=torch.float64), 0.0).numpy()  # noqa: E731
        lo, hi = target.bounds()
        bounds = ((lo[0], hi[0]), (lo[1], hi[1]))
    m = result.metrics
    quality = f"sliced W2 {m['sliced_w2']:.3f} (floor {m['floor']:.3f}), " if "sliced_w2" in m else ""
    title = f"{result.spec.name} on {result.spec.run.describe()['target']}: {quality}NFE {m['nfe']}"
    files = {"samples.npy": npy_bytes(x.astype(np.float32), "samples.npy"),
             "metrics.json": json_bytes(result.metrics, "metrics.json"),
             "samples.png": figure_bytes(scatter_over_density(x, log_density, bounds, title), "samples.png")}
    if target.dim == 64:  # 8×8 images (the digits): the first 64 samples as a grid
        from dfc.plot import image_grid

        spec = result.spec
        imgs = x[:64] if spec.run.denoise else x[:64] * spec.at("u", spec.t1)  # in data space
        files["grid.png"] = figure_bytes(image_grid(imgs, nrow=8, title=f"{spec.name}: 64 samples"), "grid.png")
    return files


PATH_KEYS = {"samples.npy": "samples", "metrics.json": "metrics", "samples.png": "plot", "grid.png": "grid"}


def write_outputs(result: RunResult, out: str | Path, whole: bool = True) -> dict[str, Path]:
    """The run's outputs (`render_outputs`) in the folder `out`. `whole`: the folder is the run's own
    and is replaced as a whole (dfc.io.replace_folder), so it holds the complete old set or the complete
    new set at every moment, also after a crash; a folder holding other files is refused. Otherwise
    (a training folder's first look) each file is replaced atomically on its own."""
    from dfc.io import atomic_write_bytes, ensure_out_dir, replace_folder

    files = render_outputs(result)
    if whole:
        paths = replace_folder(out, files, RUN_FILES)
    else:
        folder = ensure_out_dir(out)
        paths = {name: atomic_write_bytes(folder / name, data) for name, data in files.items()}
    return {PATH_KEYS[name]: p for name, p in paths.items()}
