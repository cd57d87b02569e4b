"""Training learned fields (MATH §5, §8): denoising score matching, the discriminator stack of
Algorithm 2, and Algorithm 1's generator.

- `train_score`: DSM with EDM's preconditioning, log-normal σ and loss weight, one network over
  all noise levels, EMA weights for sampling (dfc.nets.ScoreNet).
- `train_disc`: Algorithm 2. Particles x ~ p_0; at each grid time t_k a logistic classifier
  between noised data (y + σ(t_k) ε)/u(t_k) (label 1) and the particles (label 0) is fitted, and
  the particles take one step of the spec's drift with ∇d_k as the GAN field (s_Q − s_p, MATH §1)
  and D = sigmoid(d_k). Independent networks per step (the paper's choice), or one shared d(x, t)
  trained with a replay of the earlier steps. The stack is sampled by Algorithm 3 (`dfc run` with
  `+ disc(path = ...)`, dfc.learned.DiscStack).
- `train_gan`: Algorithm 1, a generator regressed onto particles moved by x' = x + η β ∇d.

Every loop is seeded (one CPU torch.Generator draws all its randomness, so a run is the same on
any device up to the device's arithmetic) and resumable: checkpoints hold the weights, the
optimiser state, the generator's state and the step, so `resume=True` reaches exactly the weights
of an uninterrupted run. Ctrl-C stops at the next step boundary, saves, and re-raises
KeyboardInterrupt. `progress(step, total, loss, rate)` is called after every step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from dfc import checkpoint
from dfc.ddp import World
from dfc.errors import ConfigError, DataError
from dfc.nets import Discriminator, Generator, ScoreNet, build
from dfc.runconfig import check_seed

# ---------------------------------------------------------------------------------------
# Shared machinery


class _Stop:
    requested = False


@contextmanager
def interruptible():
    """Turn Ctrl-C into a request to stop at the next step boundary (main thread only)."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop.requested = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat tensors (its hyper-parameters are in the config)."""
    out = {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = v.clone()
    sd["state"] = state
    opt.load_state_dict(sd)


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def state_tensors(modules: dict, optimizers: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Everything a loop needs to continue exactly: weights, optimiser states, the generator's state."""
    out = {"state.rng": gen.get_state()}
    for prefix, m in modules.items():
        out.update(module_tensors(m, prefix))
    for prefix, opt in optimizers.items():
        out.update(optimizer_tensors(opt, prefix))
    return out


def restore_state(tensors: dict, path: Path, modules: dict, optimizers: dict, gen: torch.Generator) -> None:
    """The inverse of `state_tensors` (a missing or misshapen tensor is a DataError naming the file)."""
    for prefix, m in modules.items():
        checkpoint.load_module(m, tensors, prefix, path)
    for prefix, opt in optimizers.items():
        restore_optimizer(opt, tensors, prefix)
    gen.set_state(tensors["state.rng"])


def check_data(x: torch.Tensor, where: str = "the training data") -> torch.Tensor:
    from dfc.data import check_points

    return check_points(x, where)


def _rate(done: int, per_step: int, start: float) -> float:
    return done * per_step / max(time.perf_counter() - start, 1e-9)


def _resume_or_fresh(path: Path, kind: str, resume: bool, expect: dict):
    """The checkpoint to continue from (or None for a fresh run)."""
    if not resume:
        return None
    if not path.exists():
        raise DataError(f"--resume: there is no checkpoint {path} to continue.", None,
                        "Run without --resume to start, or give the --out folder of the interrupted run.")
    return checkpoint.load(path, kind, expect)


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to 5% of `lr` (a function of the step alone: resumable)."""
    w = min(1.0, (step + 1) / max(1, warmup))
    return lr * w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total))))


# ---------------------------------------------------------------------------------------
# Denoising score matching


@dataclass(frozen=True)
class ScoreConfig:
    steps: int = 6000
    batch: int = 512
    lr: float = 2e-3
    warmup: int = 200
    hidden: int = 256
    depth: int = 3
    ema: float = 0.999
    p_mean: float = -1.2  # EDM's log-normal σ (in units of the data's scale)
    p_std: float = 1.2
    seed: int = 0
    save_every: int = 1000

    def check(self) -> None:
        check_seed(self.seed)
        for name in ("steps", "batch", "hidden", "depth", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1.")
        if not (0.0 <= self.ema < 1.0):
            raise ConfigError(f"--ema {self.ema}: an EMA decay is in [0, 1).")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr {self.lr}: a learning rate is > 0.")


def train_score(data: torch.Tensor, info: dict, out: str | Path, cfg: ScoreConfig = ScoreConfig(), *,
                resume: bool = False, device: str = "cpu", progress=None, world: World = World()) -> dict:
    """DSM with EDM preconditioning on `data` (N, D); writes OUT/score.safetensors. Returns the log.

    Under torchrun (`world`, dfc.ddp) each rank trains on its slice of every global batch of
    `cfg.batch`; rank 0 writes the checkpoint; the log's losses are the global batch's."""
    cfg.check()
    data = check_data(data, f"the training data {info.get('source', info.get('name'))!r}")
    from dfc.data import moments

    mean, var = moments(data)
    scale = math.sqrt(max(var, 1e-12))
    torch.manual_seed(cfg.seed)
    net = ScoreNet(data.shape[1], cfg.hidden, cfg.depth, mean.float(), scale)
    ema = ScoreNet(data.shape[1], cfg.hidden, cfg.depth, mean.float(), scale)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = torch.zeros(cfg.steps, dtype=torch.float64)
    path = Path(out) / "score.safetensors"
    header = {"kind": "score", "arch": net.arch(), "normalisation": net.norm_record(), "data": info,
              "config": asdict(cfg)}
    step = 0
    prev = world.on_main(lambda: _resume_or_fresh(path, "score", resume, {k: header[k] for k in (
        "data", "arch", "config", "normalisation")}))
    if prev is not None:
        tensors, old = prev
        restore_state(tensors, path, {"model": net, "ema": ema}, {"opt": opt}, gen)
        step = int(old["progress"]["step"])
        losses[:step] = tensors["log.loss"][:step]
    net.to(device)
    ema.to(device)
    _move_optimizer(opt, device)
    z_data = ((data - mean.float()) / scale).to(device)
    model = world.wrap(net)

    def save(k: int) -> None:
        if not world.main:
            return
        tensors = {**state_tensors({"model": net, "ema": ema}, {"opt": opt}, gen), "log.loss": losses[:k].clone()}
        checkpoint.save(path, tensors, {**header, "progress": {"step": k, "total": cfg.steps,
                                                               "complete": k >= cfg.steps}})

    n, d = z_data.shape
    start, first = time.perf_counter(), step
    with interruptible() as stop:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
            idx = torch.randint(n, (cfg.batch,), generator=gen)  # the global batch; this rank keeps its part
            sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(cfg.batch, 1, generator=gen))
            eps = torch.randn(cfg.batch, d, generator=gen)
            part = world.shard(cfg.batch)
            sigma, eps, z = sigma[part].to(device), eps[part].to(device), z_data[idx[part].to(device)]
            weight = (sigma * sigma + 1) / (sigma * sigma)  # EDM's λ(σ) with σ_data = 1
            loss = world.mean(weight * (model(z + sigma * eps, sigma) - z) ** 2, cfg.batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay = min(cfg.ema, (1 + step) / (10 + step))  # EMA with a warm-up (early weights forgotten fast)
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(pm, 1 - decay)
            flags = torch.tensor(float(stop.requested), device=loss.device)
            stats = world.average(torch.stack([loss.detach(), flags]))  # the global loss and the stop: one all-reduce
            losses[step], stopping = float(stats[0]), bool(stats[1] > 0)
            step += 1
            if progress is not None:
                progress(step, cfg.steps, float(losses[max(0, step - 50):step].mean()),
                         _rate(step - first, cfg.batch, start))
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                save(step)
            if stopping and step < cfg.steps:
                raise KeyboardInterrupt
    wall = time.perf_counter() - start
    return {"path": str(path), "steps": cfg.steps, "final_loss": float(losses[-min(200, cfg.steps):].mean()),
            "losses": losses.tolist(), "wall_s": wall, "samples_per_s": (cfg.steps - first) * cfg.batch / max(wall, 1e-9),
            "data": info, "config": asdict(cfg)}


def _move_optimizer(opt: torch.optim.Optimizer, device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)


# ---------------------------------------------------------------------------------------
# Algorithm 2: the time-indexed discriminator stack


@dataclass(frozen=True)
class DiscConfig:
    variant: str = "independent"  # or "shared"
    iters: int = 300  # optimiser steps per time step
    batch: int = 1024  # real and fake points per optimiser step (each)
    lr: float = 2e-3
    hidden: int = 128
    depth: int = 2
    weight_decay: float = 0.0
    warm_start: bool = True  # d_k starts from d_{k-1}'s weights (independent networks, faster fits)
    particles: int = 4000
    seed: int = 0

    def check(self) -> None:
        check_seed(self.seed)
        if self.variant not in ("independent", "shared"):
            raise ConfigError(f"--variant {self.variant!r}: choose independent (one network per step, the "
                              f"paper's Alg. 2) or shared (one d(x, t)).")
        for name in ("iters", "batch", "hidden", "depth"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)}: must be at least 1.")
        if self.particles < 2:
            raise ConfigError(f"--particles {self.particles}: at least 2.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr {self.lr}: a learning rate is > 0.")


def spec_record(spec) -> dict:
    """What a stack or generator was trained for: the spec, the digest of its dynamics, its params
    and the grid it replays."""
    ts = spec.grid()
    run = spec.run.describe()
    return {"name": spec.name, "dynamics": spec.dynamics_digest,
            "params": {str(k): float(v) for k, v in spec.params.items()},
            "steps": spec.run.steps, "clock": spec.run.clock, "grid": run["grid"], "time": list(spec.run.time),
            "solver": spec.run.solver, "ts": [float(t) for t in ts]}


def logistic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, world: World = World(), n: int | None = None
                  ) -> torch.Tensor:
    """Real labelled 1, fake 0; the optimum is d* = log(Q/p) (MATH §1). Under DDP the logits are this
    rank's part of a global batch of `n` (World.mean)."""
    n = d_real.shape[0] if n is None else n
    return world.mean(F.softplus(-d_real), n) + world.mean(F.softplus(d_fake), n)


def train_disc(spec, data: torch.Tensor, info: dict, fields_target, score_record: dict, out: str | Path,
               cfg: DiscConfig = DiscConfig(), *, resume: bool = False, device: str = "cpu", progress=None,
               world: World = World()) -> dict:
    """Algorithm 2 on the run grid of `spec`; writes OUT/stack.safetensors. Returns the log.

    `fields_target` supplies s_Q for the spec's score part (an exact target or a LearnedScore);
    `score_record` describes it for the header. Under torchrun (`world`, dfc.ddp) each rank fits
    the step's discriminator on its slice of every global batch; only the network of the current
    step is wrapped for DDP (the others take no part in the step), and every rank moves all the
    particles alike (the same generator), so they agree without communication."""
    from dfc.data import moments
    from dfc.fields import Drift
    from dfc.learned import DiscStack
    from dfc.sample import sample_prior
    from dfc.solvers import Grid, Terms, solve
    from dfc.targets import DataSet

    cfg.check()
    if spec.run.solver != "euler":
        raise ConfigError(f"Algorithm 2 steps the particles with Euler steps; the run asks for {spec.run.solver}.",
                          spec.run.spans.get("solver"), "Use --run solver=euler (Heun's corrector would need a "
                                                        "discriminator at the predicted points).")
    if not spec.has_gan_part:
        raise ConfigError(f"spec {spec.name!r} has no GAN part (β = ½g²): it never uses a discriminator.",
                          None, "Train a stack for a spec with a GAN part, e.g. diffusion_gan or diffflow_gan.")
    data = check_data(data, f"the training data {info.get('source', info.get('name'))!r}")
    mean, var = moments(data)
    grid = Grid.of(spec)
    ts = grid.ts
    K = grid.steps
    sig = np.array([spec.at("sigma", t) for t in ts])
    us = np.array([spec.at("u", t) for t in ts])
    torch.manual_seed(cfg.seed)
    shared = cfg.variant == "shared"
    stack = DiscStack.empty(cfg, info, spec_record(spec), score_record, mean, var, ts, sig, us,
                            spec.t0, spec.t1, device=device)
    path = Path(out) / "stack.safetensors"
    gen = torch.Generator().manual_seed(cfg.seed)
    data_target = DataSet(data, name=info["name"]).to(device="cpu", dtype=torch.float32)
    header = stack.header()
    expect = {k: header[k] for k in ("data", "spec", "score", "arch", "config")}
    losses = torch.zeros(K, dtype=torch.float64)
    accs = torch.zeros(K, dtype=torch.float64)
    opt = None
    replay = None  # shared variant: the (normalised) particles of every step so far, replayed
    if shared:
        opt = torch.optim.Adam(stack.nets[0].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        replay = torch.zeros(K, cfg.particles, data.shape[1])
    prev = world.on_main(lambda: _resume_or_fresh(path, "disc", resume, expect))
    if prev is not None:
        tensors, old = prev
        k0 = int(old["progress"]["step"])
        if k0 >= K:
            raise DataError(f"--resume: the stack {path} is already complete ({K} steps).", None,
                            "Run without --resume to train a new one.")
        stack.load_nets(tensors, k0, path)
        x = tensors["state.x"].clone()
        gen.set_state(tensors["state.rng"])
        losses[:k0], accs[:k0] = tensors["log.loss"][:k0], tensors["log.acc"][:k0]
        if shared:
            restore_optimizer(opt, tensors, "opt")
            replay[:k0] = tensors["state.replay"]
    else:
        k0 = 0
        x = sample_prior(spec, data_target, cfg.particles, gen)
    stack.to(device)
    if opt is not None:
        _move_optimizer(opt, device)
    if replay is not None:
        replay = replay.to(device)
    y_all = data.to(device)
    terms = Terms(Drift(spec, fields_target, stack))

    def save(k: int, x_now: torch.Tensor) -> None:
        if not world.main:
            return
        done = k >= K
        tensors = {**stack.tensors(k), "log.loss": losses[:k].clone(), "log.acc": accs[:k].clone()}
        if not done:  # the training state; a finished stack keeps only what sampling needs
            tensors.update({"state.x": x_now.detach().cpu(), "state.rng": gen.get_state()})
            if shared:
                tensors.update(optimizer_tensors(opt, "opt"))
                tensors["state.replay"] = replay[:k].cpu()
        checkpoint.save(path, tensors, {**header, "progress": {"step": k, "total": K, "complete": done}})

    start = time.perf_counter()
    x = x.to(device)
    model = world.wrap(stack.nets[0]) if shared else None
    part = world.shard(cfg.batch)
    with interruptible() as stop:
        for k in range(k0, K):
            zf = stack.normalise(x, k)
            if shared:
                replay[k] = zf
            else:
                net = stack.new_net(k, warm=cfg.warm_start, seed=cfg.seed)
                opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
                model = world.wrap(net)  # the active network only: d_j for j != k is not used in this step
            for it in range(cfg.iters):
                if shared:  # half the batch at t_k, half replayed from the steps so far
                    half = cfg.batch // 2
                    steps_ = torch.cat([torch.full((half,), k), torch.randint(k + 1, (cfg.batch - half,), generator=gen)])
                else:
                    steps_ = torch.full((cfg.batch,), k)
                fi = torch.randint(cfg.particles, (cfg.batch,), generator=gen)  # the global batch; this rank
                yi = torch.randint(y_all.shape[0], (cfg.batch,), generator=gen)  # keeps its part
                eps = torch.randn(cfg.batch, y_all.shape[1], generator=gen)
                fi, yi, eps, steps_ = (v[part].to(device) for v in (fi, yi, eps, steps_))
                fake = replay[steps_, fi] if shared else zf[fi]
                real = stack.noised_data(y_all[yi], eps, steps_)
                cond = stack.cond(steps_) if shared else None
                d_real, d_fake = model(real, cond), model(fake, cond)
                loss = logistic_loss(d_real, d_fake, world, cfg.batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if progress is not None:
                    progress(k * cfg.iters + it + 1, K * cfg.iters, float(loss.detach()),
                             _rate((k - k0) * cfg.iters + it + 1, 2 * cfg.batch, start))
            with torch.no_grad():
                losses[k] = float(world.average(loss.detach()))
                right = world.mean((d_real > 0).double(), cfg.batch) + world.mean((d_fake < 0).double(), cfg.batch)
                accs[k] = 0.5 * float(world.average(right))
            stack.fitted = k + 1
            x = solve(terms, "euler", x, grid.window(k, k + 1), generator=gen)  # Alg. 2's particle step
            save(k + 1, x)  # every step: a stack is resumable at any step boundary
            if world.any(stop.requested) and k + 1 < K:
                raise KeyboardInterrupt
    wall = time.perf_counter() - start
    return {"path": str(path), "steps": K, "losses": losses.tolist(), "accuracy": accs.tolist(), "wall_s": wall,
            "particles": x.detach().cpu(), "variant": cfg.variant, "config": asdict(cfg)}


# ---------------------------------------------------------------------------------------
# Algorithm 1: a generator regressed onto particles moved by the discriminator


def particle_step(x: torch.Tensor, d, beta, eta: float, f=None) -> torch.Tensor:
    """x' = x + η (f(x) + β(D(x)) ∇d(x)) with D = sigmoid(d) (MATH §8, Alg. 1); x' carries no graph.

    `d` maps points to logits (N,); `beta(D)` is the spec's β at the current time, a function of the
    per-particle probability D (N, 1)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logit = d(xg).reshape(-1)
        (grad,) = torch.autograd.grad(logit.sum(), xg)
    weight = beta(torch.sigmoid(logit.detach())[:, None])
    move = weight * grad
    if f is not None:
        move = move + f(x.detach())
    return (x.detach() + eta * move).detach()


def generator_regression_loss(g, z: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
    """½‖G_θ(z) − stopgrad(x')‖², summed over coordinates, averaged over the batch."""
    return 0.5 * (g(z) - x_next.detach()).pow(2).sum(1).mean()


@dataclass(frozen=True)
class GanConfig:
    iters: int = 3000
    batch: int = 512
    d_steps: int = 2  # discriminator updates per generator update
    eta: float = 0.0  # 0: the spec's own step (t1 − t0)/steps
    lr_g: float = 1e-3
    lr_d: float = 2e-3
    hidden: int = 128
    depth: int = 2
    latent: int = 8
    seed: int = 0
    save_every: int = 500

    def check(self) -> None:
        check_seed(self.seed)
        for name in ("iters", "batch", "d_steps", "hidden", "depth", "latent", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1.")
        if self.eta < 0:
            raise ConfigError(f"--eta {self.eta}: the particle step is >= 0 (0 takes the spec's step).")


def check_gan_flow(spec) -> None:
    """Algorithm 1 needs a GAN flow: no score part and no noise on the spec's interval (MATH §4)."""
    ts = np.linspace(spec.t0, spec.t1, 65)
    if np.any(np.abs(spec.on_grid("w_score", ts)) > 1e-12) or np.any(np.abs(spec.on_grid("noise2", ts)) > 1e-12):
        raise ConfigError(f"Algorithm 1 trains a GAN flow (g = 0: no score part, no noise); spec {spec.name!r} "
                          f"has g² ≠ 0.", None, "Use vanilla_gan, ns_gan or diffflow_gan; for Diffusion-GAN "
                                                "train a score network and a discriminator stack.")


def train_gan(spec, data: torch.Tensor, info: dict, out: str | Path, cfg: GanConfig = GanConfig(), *,
              resume: bool = False, device: str = "cpu", progress=None) -> dict:
    """Algorithm 1 for a GAN-flow spec (no score part); writes OUT/gan.safetensors. Returns the log.

    Iteration i runs at t_i = t0 + (t1 − t0) i / iters: the real data are noised at σ(t_i) (an annealed
    σ weakens the discriminator early, MATH §4) and β is the spec's β(t_i, D)."""
    from dfc.data import moments

    cfg.check()
    check_gan_flow(spec)
    data = check_data(data, f"the training data {info.get('source', info.get('name'))!r}")
    mean, var = moments(data)
    scale = math.sqrt(max(var, 1e-12))
    eta = cfg.eta or (spec.t1 - spec.t0) / spec.run.steps
    torch.manual_seed(cfg.seed)
    g = Generator(data.shape[1], cfg.latent, cfg.hidden, cfg.depth, mean.float(), scale)
    d = Discriminator(data.shape[1], cfg.hidden, cfg.depth)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    log = torch.zeros(cfg.iters, 2, dtype=torch.float64)
    path = Path(out) / "gan.safetensors"
    header = {"kind": "gan", "arch": {"generator": g.arch(), "discriminator": d.arch()},
              "normalisation": g.norm_record(), "data": info, "spec": spec_record(spec), "config": asdict(cfg),
              "eta": eta}
    prev = _resume_or_fresh(path, "gan", resume, {k: header[k] for k in ("data", "spec", "arch", "normalisation",
                                                                         "config")})
    i = 0
    if prev is not None:
        tensors, old = prev
        restore_state(tensors, path, {"generator": g, "discriminator": d}, {"opt_g": opt_g, "opt_d": opt_d}, gen)
        i = int(old["progress"]["step"])
        log[:i] = tensors["log.loss"][:i]
    g.to(device)
    d.to(device)
    _move_optimizer(opt_g, device)
    _move_optimizer(opt_d, device)
    y_all = data.to(device)
    m_dev, s_dev = mean.float().to(device), scale

    def logit(x):  # d on the data's normalised coordinates
        return d((x - m_dev) / s_dev)

    def save(k: int) -> None:
        tensors = {**state_tensors({"generator": g, "discriminator": d}, {"opt_g": opt_g, "opt_d": opt_d}, gen),
                   "log.loss": log[:k].clone()}
        checkpoint.save(path, tensors, {**header, "progress": {"step": k, "total": cfg.iters,
                                                               "complete": k >= cfg.iters}})

    start, first = time.perf_counter(), i
    f_fn = spec.fn["f"]
    lin = spec.f_linear
    f_zero = lin is not None and lin[0] == 0 and lin[1] == 0
    with interruptible() as stop:
        while i < cfg.iters:
            t = spec.t0 + (spec.t1 - spec.t0) * i / cfg.iters
            sigma, u = spec.at("sigma", t), spec.at("u", t)
            z = torch.randn(cfg.batch, cfg.latent, generator=gen).to(device)
            with torch.no_grad():
                x = g(z)
            for _ in range(cfg.d_steps):  # the discriminator: real (σ(t)-noised data) against x
                yi = torch.randint(y_all.shape[0], (cfg.batch,), generator=gen)
                eps = torch.randn(cfg.batch, y_all.shape[1], generator=gen).to(device)
                real = (y_all[yi.to(device)] + sigma * eps) / u
                loss_d = logistic_loss(logit(real), logit(x))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            beta = (lambda p, t=t: spec.fn["beta"](t, p))  # noqa: E731  β(t, D), D per particle
            x_next = particle_step(x, logit, beta, eta, None if f_zero else (lambda v, t=t: f_fn(v, t)))
            loss_g = generator_regression_loss(g, z, x_next)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            log[i, 0], log[i, 1] = float(loss_d.detach()), float(loss_g.detach())
            i += 1
            if progress is not None:
                progress(i, cfg.iters, float(log[i - 1, 0]), _rate(i - first, cfg.batch, start))
            if i % cfg.save_every == 0 or i == cfg.iters or stop.requested:
                save(i)
            if stop.requested and i < cfg.iters:
                raise KeyboardInterrupt
    return {"path": str(path), "iters": cfg.iters, "eta": eta, "loss_d": log[:, 0].tolist(),
            "loss_g": log[:, 1].tolist(), "wall_s": time.perf_counter() - start, "config": asdict(cfg)}


def load_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, dict]:
    tensors, header = checkpoint.load(path, "gan")
    try:
        g = build(header["arch"]["generator"], header["normalisation"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"checkpoint {path} has an architecture this dfc does not know ({exc}).", None,
                        checkpoint.HINT) from None
    checkpoint.load_module(g, tensors, "generator", path)
    return g.to(device).eval(), header


__all__ = ["ScoreConfig", "DiscConfig", "GanConfig", "train_score", "train_disc", "train_gan", "particle_step",
           "generator_regression_loss", "logistic_loss", "load_generator", "lr_at"]
