"""The networks of learned fields (MATH §5): a score network with EDM preconditioning, a logistic
discriminator (one per time step, or one shared `d(x, t)`), and Algorithm 1's generator.

Every network works in normalised coordinates: the data's mean is subtracted and the result is
divided by one scalar scale (the root mean per-coordinate variance), so the data have σ_data = 1
in the network's units and a noise level σ becomes σ/scale. The normalisation is part of the
record (`norm_record()`), stored beside the architecture (`arch()`) in each checkpoint's header
and as buffers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

N_FREQ = 16  # Fourier features of a noise level or time: frequencies π·2^k, k log-spaced on [-1, 4]


class Fourier(nn.Module):
    """Fixed (deterministic) Fourier features [v, sin(ω_k v), cos(ω_k v)] of scalars v (N, m)."""

    def __init__(self, inputs: int = 1, n: int = N_FREQ):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.linspace(-1.0, 4.0, n))
        self.out_features = inputs * (2 * n + 1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        a = v[:, :, None] * self.freqs  # (N, m, n)
        return torch.cat([v, torch.sin(a).flatten(1), torch.cos(a).flatten(1)], 1)


class ResMLP(nn.Module):
    """x (N, D) and a conditioning vector e (N, E) -> (N, out): residual SiLU blocks, each adding a
    projection of e (the noise-level or time embedding) inside the block."""

    def __init__(self, dim: int, out: int, hidden: int, depth: int, cond: int):
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.cond = nn.ModuleList([nn.Linear(cond, hidden) for _ in range(depth + 1)]) if cond else None
        self.l1 = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.l2 = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x)
        if self.cond is not None:
            h = h + self.cond[0](e)
        for i, (l1, l2) in enumerate(zip(self.l1, self.l2)):
            a = l1(F.silu(h))
            if self.cond is not None:
                a = a + self.cond[i + 1](e)
            h = h + l2(F.silu(a))
        return self.out(F.silu(h))


class Normalised(nn.Module):
    """Holds the data normalisation: z = (y − shift)/scale."""

    def __init__(self, dim: int, shift=None, scale: float = 1.0):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("shift", torch.zeros(dim) if shift is None else torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def norm_record(self) -> dict:
        return {"shift": [float(v) for v in self.shift.cpu()], "scale": float(self.scale)}


class ScoreNet(Normalised):
    """EDM-preconditioned denoiser (Karras et al. 2022, Table 1) in normalised units, σ_data = 1:

        D(z; σ) = c_skip z + c_out F(c_in z, c_noise),  c_skip = 1/(σ² + 1), c_out = σ/sqrt(σ² + 1),
        c_in = 1/sqrt(σ² + 1), c_noise = ln(σ)/4,

    F a residual MLP conditioned on Fourier features of c_noise. In data units the score of the
    smoothed data is s_q_σ(y) = (D(y; σ) − y)/σ² (MATH §5)."""

    kind = "score"

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, shift=None, scale: float = 1.0):
        super().__init__(dim, shift, scale)
        self.hidden, self.depth = int(hidden), int(depth)
        self.embed = Fourier(1)
        self.f = ResMLP(dim, dim, hidden, depth, self.embed.out_features)
        nn.init.zeros_(self.f.out.weight)  # starts as D = c_skip z: the best denoiser that knows only σ_data
        nn.init.zeros_(self.f.out.bias)

    def arch(self) -> dict:
        return {"net": "edm-resmlp", "dim": self.dim, "hidden": self.hidden, "depth": self.depth, "n_freq": N_FREQ}

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(z; σ) in normalised units; σ is (N, 1) (normalised) or broadcastable to it."""
        sigma = sigma.expand(z.shape[0], 1) if sigma.dim() == 2 else sigma.reshape(-1, 1).expand(z.shape[0], 1)
        s2 = sigma * sigma
        c_in = torch.rsqrt(s2 + 1)
        c_skip = 1 / (s2 + 1)
        c_out = sigma * c_in
        e = self.embed(torch.log(sigma) / 4)
        return c_skip * z + c_out * self.f(c_in * z, e)

    def score(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """∇ log q_σ(y) in data units (σ a python float in data units)."""
        scale = self.scale
        s = torch.full((1, 1), float(sigma), dtype=y.dtype, device=y.device) / scale
        z = (y - self.shift) / scale
        return (self(z, s) - z) / (s * s) / scale


class Discriminator(Normalised):
    """A logistic classifier's logit d. Independent (`shared = False`): one network of z only, for
    one time step. Shared: d(z, t) conditioned on Fourier features of (ln σ(t)/4, t scaled to [0, 1]).
    Inputs are normalised per time step by the caller (see dfc.learned.DiscStack)."""

    kind = "disc"

    def __init__(self, dim: int, hidden: int = 128, depth: int = 2, shared: bool = False):
        super().__init__(dim)
        self.hidden, self.depth, self.shared = int(hidden), int(depth), bool(shared)
        self.embed = Fourier(2) if shared else None
        self.f = ResMLP(dim, 1, hidden, depth, self.embed.out_features if shared else 0)

    def arch(self) -> dict:
        return {"net": "logit-resmlp", "dim": self.dim, "hidden": self.hidden, "depth": self.depth,
                "shared": self.shared, "n_freq": N_FREQ}

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logit (N,) at normalised points z; `cond` (N, 2) = (ln σ/4, t01) for the shared network."""
        e = self.embed(cond) if self.shared else None
        return self.f(z, e)[:, 0]


class Generator(Normalised):
    """Algorithm 1's generator x = shift + scale · MLP(z), z ~ N(0, I_latent)."""

    kind = "generator"

    def __init__(self, dim: int, latent: int = 8, hidden: int = 128, depth: int = 2, shift=None, scale: float = 1.0):
        super().__init__(dim, shift, scale)
        self.latent, self.hidden, self.depth = int(latent), int(hidden), int(depth)
        self.f = ResMLP(latent, dim, hidden, depth, 0)

    def arch(self) -> dict:
        return {"net": "generator-resmlp", "dim": self.dim, "latent": self.latent, "hidden": self.hidden,
                "depth": self.depth}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.shift + self.scale * self.f(z)


def build(arch: dict, norm: dict | None = None) -> nn.Module:
    """The module an architecture record (and normalisation record) describes: the inverse of
    `arch()` and `norm_record()`. An unknown or incomplete record raises KeyError or TypeError."""
    net = arch.get("net")
    if arch.get("n_freq", N_FREQ) != N_FREQ:
        raise KeyError(f"n_freq {arch.get('n_freq')}")
    norm = norm or {}
    shift, scale = norm.get("shift"), norm.get("scale", 1.0)
    if net == "edm-resmlp":
        return ScoreNet(arch["dim"], arch["hidden"], arch["depth"], shift, scale)
    if net == "logit-resmlp":
        return Discriminator(arch["dim"], arch["hidden"], arch["depth"], arch["shared"])
    if net == "generator-resmlp":
        return Generator(arch["dim"], arch["latent"], arch["hidden"], arch["depth"], shift, scale)
    raise KeyError(net)


__all__ = ["ScoreNet", "Discriminator", "Generator", "Fourier", "ResMLP", "build"]
