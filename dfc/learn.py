"""Learned score fields (MATH §5): denoising score matching with EDM preconditioning.

One network D_θ(x; σ) is trained over all noise levels (log-normal σ, EDM's loss weight) and
gives the score of the smoothed data, s_q_σ(y) = (D_θ(y; σ) − y)/σ². Wrapped as a target-like
object (`LearnedScore`), it serves every spec: s_Q(x, t) = u·s_q_σ(t)(u x), as for exact fields.
Training is seeded and resumable: a checkpoint holds the weights, the EMA weights, the
optimiser state, the step and the data generator's state, so a resumed run reaches exactly the
weights of an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfc import checkpoint
from dfc.errors import ConfigError, DataError

P_MEAN, P_STD = -1.2, 1.2  # EDM's log-normal training distribution of σ


# ---------------------------------------------------------------------------------------
# Data, embedded: nothing is downloaded


DATASETS = ("ring8", "grid25", "checkerboard", "moons", "swissroll", "circles", "digits")


def make_data(name: str, n: int = 20_000, seed: int = 0, base_dir: Path | None = None) -> torch.Tensor:
    """Training data: a 2-D set made in-process, sklearn's bundled 8×8 digits in [-1, 1], or a .npy."""
    if name.endswith(".npy"):
        from dfc.targets import load_npy

        path = Path(name) if base_dir is None or Path(name).is_absolute() else Path(base_dir) / name
        return load_npy(path).points.float()  # validated: finite, 2-D, or a DataError naming the file
    if name in ("ring8", "grid25", "checkerboard"):
        from dfc.targets import make_target

        return make_target(name).sample(n, torch.Generator().manual_seed(seed)).float()
    from sklearn import datasets as sk

    if name == "moons":
        x = sk.make_moons(n, noise=0.05, random_state=seed)[0] * 2.0 - np.array([1.0, 0.5]) * 2
    elif name == "swissroll":
        x = sk.make_swiss_roll(n, noise=0.3, random_state=seed)[0][:, [0, 2]] / 3.0
    elif name == "circles":
        x = sk.make_circles(n, noise=0.03, factor=0.5, random_state=seed)[0] * 3.0
    elif name == "digits":
        x = sk.load_digits().data / 16.0 * 2.0 - 1.0  # 1,797 images of 8×8, bundled with sklearn
    else:
        raise ConfigError(f"unknown data set {name!r}.", None, f"Use one of {', '.join(DATASETS)} or a .npy file.")
    return torch.as_tensor(x, dtype=torch.float32)


# ---------------------------------------------------------------------------------------
# The network


class ScoreMLP(nn.Module):
    """EDM-preconditioned denoiser D(x; σ) = c_skip x + c_out F(c_in x, c_noise) with an MLP F
    and a Fourier embedding of c_noise = ln(σ)/4. Inputs are standardised with the data's mean
    and scale (`shift`, `scale`), so σ_data = 1 in the network's units."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 4, emb: int = 64):
        super().__init__()
        self.dim, self.hidden, self.depth, self.emb = dim, hidden, depth, emb
        self.register_buffer("freqs", torch.randn(emb // 2, generator=torch.Generator().manual_seed(0)) * 4.0)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))
        layers, width = [], dim + emb
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def arch(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth, "emb": self.emb}

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; σ) in data units; σ is (N, 1) or a scalar tensor."""
        s = sigma / self.scale
        z = (x - self.shift) / self.scale
        c_skip, c_out = 1 / (s**2 + 1), s / torch.sqrt(s**2 + 1)
        c_in = 1 / torch.sqrt(s**2 + 1)
        c_noise = torch.log(s).reshape(-1, 1) / 4 * self.freqs
        emb = torch.cat([torch.sin(c_noise), torch.cos(c_noise)], 1).expand(z.shape[0], -1)
        f = self.net(torch.cat([c_in * z, emb], 1))
        return (c_skip * z + c_out * f) * self.scale + self.shift


# ---------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class ScoreConfig:
    steps: int = 4000
    batch: int = 512
    lr: float = 1e-3
    ema: float = 0.999
    hidden: int = 256
    depth: int = 4
    seed: int = 0
    checkpoint_every: int = 500


def _state(model, ema, opt, step, gen) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    flat, _ = _flatten_optimizer(opt)
    out |= flat
    out["step"] = torch.tensor(step)
    out["rng"] = gen.get_state()
    return out


def _flatten_optimizer(opt) -> tuple[dict[str, torch.Tensor], dict]:
    st = opt.state_dict()
    flat = {}
    for pid, s in st["state"].items():
        for k, v in s.items():
            flat[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return flat, st["param_groups"]


def _restore_optimizer(opt, tensors: dict[str, torch.Tensor]) -> None:
    st = opt.state_dict()
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.clone()
    st["state"] = state
    opt.load_state_dict(st)


def train_score(data: torch.Tensor, out: Path, cfg: ScoreConfig = ScoreConfig(), resume: bool = False,
                device: str = "cpu", progress=None, data_name: str = "data") -> dict:
    """Denoising score matching (EDM loss) on `data`; writes OUT/score.safetensors. Returns the log."""
    if data.ndim != 2 or data.shape[0] < 2:
        raise DataError(f"training data must be an (N, D) array with N ≥ 2, got shape {tuple(data.shape)}.")
    if not bool(torch.isfinite(data).all()):
        raise DataError(f"training data {data_name} holds NaN or infinite values; clean it first.")
    torch.manual_seed(cfg.seed)
    model = ScoreMLP(data.shape[1], cfg.hidden, cfg.depth).to(device)
    model.shift.copy_(data.mean(0))
    model.scale.copy_(data.std(0).mean())
    ema = ScoreMLP(data.shape[1], cfg.hidden, cfg.depth).to(device)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    header = {"kind": "score", "arch": model.arch(), "config": asdict(cfg), "data": data_name,
              "data_hash": checkpoint.data_hash(data)}
    path = Path(out) / "score.safetensors"
    step, losses = 0, []
    if resume:
        tensors, old = checkpoint.load(path, "score", {"arch": header["arch"], "data_hash": header["data_hash"],
                                                       "config": header["config"]})
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _restore_optimizer(opt, tensors)
        gen.set_state(tensors["rng"])
        step, losses = int(tensors["step"]), list(old.get("losses", []))
    data = data.to(device)
    start = time.perf_counter()
    while step < cfg.steps:
        idx = torch.randint(data.shape[0], (cfg.batch,), generator=gen)
        y = data[idx]
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(cfg.batch, 1, generator=gen)).to(device)
        noise = torch.randn(y.shape, generator=gen).to(device) * sigma
        s_data = model.scale
        weight = (sigma**2 + s_data**2) / (sigma * s_data) ** 2
        loss = (weight * (model.denoise(y + noise, sigma) - y) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - cfg.ema)
        step += 1
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, cfg.steps, losses[-1], step * cfg.batch / max(time.perf_counter() - start, 1e-9))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint.save(path, _state(model, ema, opt, step, gen), header | {"losses": losses[-2000:]})
    return {"path": str(path), "steps": step, "final_loss": float(np.mean(losses[-100:])), "losses": losses}


# ---------------------------------------------------------------------------------------
# A learned score as a field


class LearnedScore:
    """The EMA denoiser of a score checkpoint as a target-like object: score(y, σ) = (D(y; σ) − y)/σ².

    It has no density (a GAN part that needs D(x, t) must come from elsewhere) and samples the
    training data set it was fitted to, when given, for the metrics."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype=torch.float32):
        tensors, header = checkpoint.load(path, "score")
        a = header["arch"]
        self.net = ScoreMLP(a["dim"], a["hidden"], a["depth"], a["emb"])
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.net.to(device=device, dtype=dtype).eval()
        self.dim, self.name, self.header = a["dim"], f"learned:{Path(path).stem}", header
        self.device, self.dtype, self.gaussian = torch.device(device), dtype, None
        self.path = str(path)

    def to(self, device=None, dtype=None) -> "LearnedScore":
        return LearnedScore(self.path, str(device or self.device), dtype or self.dtype)

    def score(self, y: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(max(float(sigma), 1e-4), dtype=y.dtype, device=y.device)
        return (self.net.denoise(y, s) - y) / s**2

    def log_prob_and_score(self, y, sigma):
        raise ConfigError("a learned score has no log-density: β with D(x, t) needs a discriminator or exact fields.")

    def __repr__(self) -> str:
        return f"LearnedScore({self.path!r})"


def score_error(learned: LearnedScore, target, sigmas=(0.5, 1.0, 2.0), n: int = 4000, seed: int = 0) -> dict:
    """Relative L2 error of the learned score against the exact one on samples of q_σ."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        y = target.sample(n, gen)
        y = y + s * torch.randn(y.shape, generator=gen, dtype=y.dtype)
        with torch.no_grad():
            diff = learned.score(y, s) - target.score(y, s)
        out[s] = float(diff.pow(2).sum(1).mean().sqrt() / target.score(y, s).pow(2).sum(1).mean().sqrt())
    return out


__all__ = ["make_data", "train_score", "LearnedScore", "ScoreConfig", "score_error"]
