"""Data sets for learned fields, all made in-process with fixed seeds: nothing is downloaded.

- `ring8`, `grid25`, `checkerboard`: drawn from their exact laws (`dfc.targets`).
- `moons`, `swissroll`, `circles`: curves with isotropic Gaussian noise. Their laws are
  continuous mixtures `∫ N(c(θ), s² I) dθ` over the curve parameter θ; `curve_law` makes each one
  a `GaussianMixture` over 1,024 equal-probability nodes per curve piece (midpoint rule). The node
  spacing h is at most 0.043 (the swiss roll's outer turn) for a noise std s of 0.09–0.1, so the
  mixture equals the continuous law far below float32 rounding (the midpoint rule's ripple is
  ~exp(−2π² s²/h²) < e⁻¹⁰⁰; only the open curves' two ends carry an O(h²) edge effect). That
  gives them exact scores, a floor for the metrics, and `dfc run --target moons` on exact fields;
  their samples are drawn from the continuous law itself (uniform θ, then noise).
- `digits`: scikit-learn's bundled 8×8 digits (1,797 real images, read from the installed
  package), scaled from 0..16 to [-1, 1], split once with a fixed permutation into 1,500
  training and 297 held-out images.
- any `.npy` array (validated by `dfc.targets.load_npy`: finite, 2-D, numeric).

`training_data(name)` returns the points a network is fitted to and a description with a hash
of their bytes, which checkpoints record (`dfc.checkpoint`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from dfc.errors import ConfigError
from dfc.targets import GaussianMixture, Target

EXACT = ("ring8", "grid25", "checkerboard")
CURVES = ("moons", "swissroll", "circles")
DATASETS = EXACT + CURVES + ("digits",)
DATA_SEED = 20230705  # the training sets' draw (a constant, so a name always means the same points)
DEFAULT_POINTS = 20_000  # training points drawn from a 2-D law
NODES = 1024  # quadrature nodes per curve piece
DIGITS_HELD_OUT = 297


# ---------------------------------------------------------------------------------------
# Curves with noise


def _moons(theta: torch.Tensor, piece: int) -> torch.Tensor:
    """Two interleaved half circles of radius 2, centred on the origin (θ ∈ [0, 1])."""
    a = math.pi * theta
    if piece == 0:
        x, y = torch.cos(a), torch.sin(a)
    else:
        x, y = 1 - torch.cos(a), 0.5 - torch.sin(a)
    return 2 * torch.stack([x - 0.5, y - 0.25], 1)


def _swissroll(theta: torch.Tensor, piece: int) -> torch.Tensor:
    """The swiss roll's spiral (t cos t, t sin t)/3 with t = 1.5π(1 + 2θ), as scikit-learn draws it."""
    t = 1.5 * math.pi * (1 + 2 * theta)
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 3


def _circles(theta: torch.Tensor, piece: int) -> torch.Tensor:
    """Two concentric circles of radius 3 and 1.5."""
    a = 2 * math.pi * theta
    r = 3.0 if piece == 0 else 1.5
    return r * torch.stack([torch.cos(a), torch.sin(a)], 1)


@dataclass(frozen=True)
class Curve:
    fn: object
    pieces: int
    noise: float


CURVE_DEFS = {
    "moons": Curve(_moons, 2, 0.1),
    "swissroll": Curve(_swissroll, 1, 0.1),
    "circles": Curve(_circles, 2, 0.09),
}


class CurveLaw(GaussianMixture):
    """A noisy curve: exact scores through the quadrature mixture, samples from the continuous law."""

    def __init__(self, name: str, **kw):
        c = CURVE_DEFS[name]
        nodes = (torch.arange(NODES, dtype=torch.float64) + 0.5) / NODES
        means = torch.cat([c.fn(nodes, p) for p in range(c.pieces)])
        super().__init__(means, c.noise, name=name, **kw)
        self.curve = c

    def _sample(self, n, generator, dtype, device):
        c = self.curve
        piece = torch.randint(c.pieces, (n,), generator=generator, device=device)
        theta = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        pts = torch.empty(n, 2, dtype=torch.float64, device=device)
        for p in range(c.pieces):
            sel = piece == p
            pts[sel] = c.fn(theta[sel], p)
        eps = torch.randn(n, 2, generator=generator, dtype=dtype, device=device)
        return pts.to(dtype) + c.noise * eps


def curve_law(name: str) -> CurveLaw:
    return CurveLaw(name)


# ---------------------------------------------------------------------------------------
# Digits


def digits(split: str = "train") -> torch.Tensor:
    """scikit-learn's bundled 8×8 digits in [-1, 1] (float32): `train` (1,500), `test` (297) or `all`."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("the digits data set needs scikit-learn.", None, "pip install scikit-learn") from None
    x = torch.as_tensor(load_digits().data, dtype=torch.float32) / 8.0 - 1.0  # 0..16 -> [-1, 1]
    if split == "all":
        return x
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(DATA_SEED))
    idx = perm[:DIGITS_HELD_OUT] if split == "test" else perm[DIGITS_HELD_OUT:]
    return x[idx.sort().values].contiguous()


# ---------------------------------------------------------------------------------------
# What the run and the trainers use


def law(name: str) -> Target | None:
    """The exact law of a named set or of any law-based run target (`gaussian(mean = [..], cov = [[..]])`,
    `gmm(...)`, `gauss16`, `gmm16`), or None (digits and files have only their points)."""
    if name in EXACT:
        from dfc.targets import make_target

        return make_target(name)
    if name in CURVES:
        return curve_law(name)
    if name == "digits" or name.lower().endswith(".npy"):
        return None
    return parse_law(name)[1]


def parse_law(text: str) -> tuple[str, Target]:
    """A run target written as `dfc run --target` takes it, as (canonical name, law).

    The canonical name is the run's own description of the target (`RunConfig.describe`), so a
    network trained on `gaussian(mean=[1,0], cov=2)` and a run on the same target agree on its name."""
    from dfc.runconfig import run_config
    from dfc.targets import make_target

    cfg = run_config((), {"target": text})
    return cfg.describe()["target"], make_target(cfg.target, dict(cfg.target_options))


def run_target(name: str) -> Target | None:
    """A target `dfc run` knows beyond `dfc.targets` (moons, swissroll, circles, digits), or None.

    `digits` is the held-out split as a finite data set: the metrics of a run compare with
    held-out images, and its exact field is that set's ideal denoiser."""
    if name in CURVES:
        return curve_law(name)
    if name == "digits":
        from dfc.targets import DataSet

        return DataSet(digits("test"), name="digits")
    return None


def data_hash(x: torch.Tensor) -> str:
    """sha256 of the points as contiguous float32 bytes (first 16 hex digits)."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def check_points(x: torch.Tensor, where: str) -> torch.Tensor:
    """A 2-D finite float tensor, or a DataError that names `where` and the fix."""
    from dfc.targets import _data_tensor

    return _data_tensor(x, where).to(torch.float32)


def training_data(name: str | None = None, file: str | Path | None = None, points: int = DEFAULT_POINTS,
                  ) -> tuple[torch.Tensor, dict]:
    """The points to fit and their description {name, source, n, dim, sha256}.

    Exactly one of `name` (a DATASETS entry or any law-based run target) or `file` (a .npy array)."""
    if (name is None) == (file is None):
        raise ConfigError("give one of --target NAME or --data FILE.npy.")
    if file is not None or str(name).lower().endswith(".npy"):
        from dfc.targets import load_npy

        path = Path(file if file is not None else name)
        x = load_npy(path).points.to(torch.float32)  # DataError naming the file: NaN, shape, pickle, ...
        info = {"name": path.stem, "source": str(path), "file": True}
    elif name != "digits":
        if isinstance(points, bool) or int(points) < 2:
            raise ConfigError(f"--points {points}: draw at least 2 training points.")
        if name in EXACT or name in CURVES:
            lw = law(name)
        else:
            try:
                name, lw = parse_law(name)
            except ConfigError as exc:
                raise ConfigError(f"unknown data set {name!r}: {exc.message}", None,
                                  f"Use one of {', '.join(DATASETS)}, a law such as gaussian(mean = [0, 0], "
                                  f"cov = 1), or --data FILE.npy.") from None
        gen = torch.Generator().manual_seed(DATA_SEED)
        x = lw.sample(int(points), gen).to(torch.float32)
        info = {"name": name, "source": f"{name}: {int(points)} draws of its exact law (seed {DATA_SEED})",
                "file": False}
    else:
        x = digits("train")
        info = {"name": "digits", "source": "scikit-learn's 8x8 digits, training split", "file": False}
    x = check_points(x, f"the data set {info['source']!r}")
    info.update(n=int(x.shape[0]), dim=int(x.shape[1]), sha256=data_hash(x))
    return x, info


def held_out(info: dict, n: int, seed: int = 1) -> torch.Tensor | None:
    """Fresh points of the same law (2-D sets), the held-out digits, or None (a file)."""
    if info["name"] == "digits" and not info.get("file"):
        return digits("test")
    lw = None if info.get("file") else law(info["name"])
    if lw is None:
        return None
    return lw.sample(n, torch.Generator().manual_seed(DATA_SEED + 1 + seed)).to(torch.float32)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(mean (D,), mean per-coordinate variance): the normalisation of networks and inputs."""
    x = x.to(torch.float64)
    return x.mean(0), float(x.var(0).mean())


def same_data(info: dict, run_target_name: str, target) -> str | None:
    """None if a network trained on `info` may serve a run on `target`; else why not (one clause)."""
    if int(info["dim"]) != int(target.dim):
        return f"it was trained on {info['dim']}-dimensional data ({info['name']}) and the target has {target.dim}"
    want = Path(run_target_name).stem if run_target_name.lower().endswith(".npy") else run_target_name
    if info["name"] != want:
        return f"it was trained on {info['name']!r} and the run's target is {run_target_name!r}"
    if info.get("file"):
        pts = getattr(target, "points", None)
        if pts is not None and data_hash(pts) != info["sha256"]:
            return (f"it was trained on a file {info['name']}.npy whose points (hash {info['sha256']}) differ "
                    f"from the run's {run_target_name} (hash {data_hash(pts)})")
    return None


__all__ = ["DATASETS", "training_data", "law", "run_target", "digits", "data_hash", "held_out", "CurveLaw",
           "same_data", "moments"]
