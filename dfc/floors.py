"""What `dfc run` measures, and its floor, computed once and cached on disk.

Metric levels (`dfc run --metrics`, `dfc.sample.evaluate(metrics=...)`):

- ``full``: sliced W2 with its standard error over the projection directions, and the exact
  quadratic (O(N²)) MMD² and squared energy distance. Those two have no standard error
  (`None` in metrics.json); their floor's spread `*_floor_sd` shows their sampling noise.
- ``fast``: sliced W2 as in full, and the block estimates of MMD² and of the squared energy
  distance with their standard errors (`dfc.metrics.mmd_block`, `energy_block`; blocks of
  `BLOCK` points) on at most `FAST_POINTS` points of each cloud (a fixed random subsample: their
  cost is bounded, O(min(N, FAST_POINTS) · BLOCK), and their standard error is that of the
  subsample). Sliced W2, O(N log N), always sees every point.
- ``none``: no metric; metrics.json keeps the cost figures.
- ``auto`` (the default): full up to `FULL_MAX` samples, fast above.

`measure` gives, for samples x against a reference draw: ``sliced_w2``, ``sliced_w2_se``,
``mmd2``, ``mmd2_se``, ``mmd`` = sqrt(max(mmd2, 0)), ``mmd_se`` (`dfc.metrics.root_se`; the
multi-scale RBF kernel's bandwidths come from the reference draw alone, `reference_scales`, so
a sample and the floor are measured with one kernel),
and ``energy2``, ``energy2_se``, ``energy``, ``energy_se`` likewise. A NaN standard error
(none exists) is reported as `None` by `dfc.sample.evaluate`.

The floor of a metric is its value between independent target draws of the same size and the
reference draw: what a perfect sampler would score. `compute_floor` measures `draws` of them;
the floor is their mean and ``*_floor_sd`` their standard deviation (keys ``floor``,
``floor_sd`` for sliced W2, ``mmd_floor``, ``mmd_floor_sd``, ``mmd2_floor``, ... for the
others). It depends only on the target, the size N, the seed and the level, so it is computed
once and cached as JSON in `cache_dir()`: ``$DFC_CACHE/floors`` if DFC_CACHE is set, else
``$XDG_CACHE_HOME/dfc/floors``, else ``~/.cache/dfc/floors``. The cache key (`floor_key`) is
a SHA-256 digest of the reference draw's bytes (its dtype and shape included), which
identifies the target's law and the generator exactly whatever the target is called, plus
N, seed, level, the number of draws, the metric settings and `VERSION` (bump it when what a
floor measures changes). An unreadable or corrupt cache file is ignored and rewritten; a
cache folder that cannot be written only costs the recomputation next time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dfc.errors import ConfigError, DfcError

LEVELS = ("auto", "full", "fast", "none")
FULL_MAX = 4096  # auto: the exact O(N²) statistics up to this many samples, block estimates above
BLOCK = 1024  # block size of the fast level's MMD and energy estimates
FAST_POINTS = 20_000  # the fast level's MMD and energy use at most this many points of each cloud (a fixed subsample)
N_PROJ = 256  # sliced W2 directions
VERSION = 4  # part of every floor cache key (3: bandwidths from the reference; 4: clouds centred on their own means)

METRICS = ("sliced_w2", "mmd2", "mmd", "energy2", "energy")  # the metrics that get a floor

Tick = Callable[[str], None]


def resolve_level(level: str, n: int) -> str:
    """`level` ("auto", "full", "fast" or "none") for `n` samples: auto is full up to FULL_MAX."""
    if level not in LEVELS:
        raise ConfigError(f"metrics level {level!r} is not one of {', '.join(LEVELS)}.", None,
                          "Use --metrics full (exact), fast (block estimates), none, or auto.")
    if level == "auto":
        return "full" if n <= FULL_MAX else "fast"
    return level


def floor_name(metric: str) -> str:
    """The floor's key for `metric`: `floor` for sliced W2 (as always), else `<metric>_floor`."""
    return "floor" if metric == "sliced_w2" else f"{metric}_floor"


def measure(x: torch.Tensor, ref: torch.Tensor, level: str, tick: Tick | None = None,
            points: int = FAST_POINTS, scales: list[float] | None = None) -> dict:
    """Every metric of `level` ("full" or "fast") of samples `x` against the reference `ref`
    (module doc); `tick(name)` is called before each metric is computed. The fast level's MMD
    and energy distance use at most `points` points of each cloud; `scales` are the MMD
    bandwidths (default `reference_scales(ref)`: every sample measured against `ref`, and the
    floor, share one kernel)."""
    from dfc.metrics import energy_block, mmd_block, root_se, sliced_w2_se

    if level not in ("full", "fast"):
        raise ConfigError(f"measure: level {level!r} must be full or fast.")
    tick = tick or (lambda name: None)
    scales = reference_scales(ref) if scales is None else scales
    block = max(x.shape[0], ref.shape[0], 2) if level == "full" else BLOCK
    tick("sliced W2")
    sw, sw_se = sliced_w2_se(x, ref, n_proj=N_PROJ)
    if level == "fast":
        x, ref = _subsample(x, points), _subsample(ref, points)
    tick("MMD")
    m2, m2_se = mmd_block(x, ref, scales, block=block)
    tick("energy distance")
    e2, e2_se = energy_block(x, ref, block=block)
    return {"sliced_w2": sw, "sliced_w2_se": sw_se,
            "mmd2": m2, "mmd2_se": m2_se, "mmd": math.sqrt(max(m2, 0.0)), "mmd_se": root_se(m2, m2_se),
            "energy2": e2, "energy2_se": e2_se, "energy": math.sqrt(max(e2, 0.0)), "energy_se": root_se(e2, e2_se)}


def reference_scales(ref: torch.Tensor) -> list[float] | None:
    """The MMD bandwidths of everything measured against the reference draw `ref`: from `ref`
    alone (`dfc.metrics.default_mmd_scales` of its two halves), so the kernel does not depend on
    the sample being measured."""
    from dfc.metrics import default_mmd_scales

    half = ref.shape[0] // 2
    return default_mmd_scales(ref[:half], ref[half:]) if half >= 1 else None


def _subsample(x: torch.Tensor, k: int) -> torch.Tensor:
    """At most k points of x: a fixed random subset (the same for every cloud of x's size)."""
    if x.shape[0] <= k:
        return x
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(x.shape[0]))[:k]
    return x[pick.to(x.device)]


def compute_floor(target, ref: torch.Tensor, generator: torch.Generator, draws: int, level: str,
                  tick: Tick | None = None, scales: list[float] | None = None) -> dict:
    """The floor of every metric: `draws` independent target draws of ref's size (from
    `generator`) measured against `ref` (MMD bandwidths `scales`, default `reference_scales(ref)`);
    mean and standard deviation over the draws."""
    tick = tick or (lambda name: None)
    n = ref.shape[0]
    scales = reference_scales(ref) if scales is None else scales
    values = []
    for i in range(draws):
        other = target.sample(n, generator)
        values.append(measure(other, ref, level, lambda name, i=i: tick(f"floor {i + 1}/{draws}: {name}"),
                              scales=scales))
    out = {}
    for metric in METRICS:
        v = np.array([d[metric] for d in values], dtype=np.float64)
        out[floor_name(metric)] = float(v.mean())
        out[floor_name(metric) + "_sd"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return out


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where floors are cached: $DFC_CACHE/floors, else $XDG_CACHE_HOME/dfc/floors, else
    ~/.cache/dfc/floors."""
    if os.environ.get("DFC_CACHE"):
        base = Path(os.environ["DFC_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dfc"
    else:
        base = Path.home() / ".cache" / "dfc"
    return base / "floors"


def floor_key(ref: torch.Tensor, n: int, seed: int, level: str, draws: int) -> dict:
    """What identifies a floor (module doc): the reference draw's digest, N, seed, level, ..."""
    arr = np.ascontiguousarray(ref.detach().cpu().numpy())
    digest = hashlib.sha256(f"{arr.dtype.str} {arr.shape}\n".encode())
    digest.update(arr.tobytes())
    return {"version": VERSION, "reference": digest.hexdigest(), "samples": int(n), "seed": int(seed),
            "level": level, "draws": int(draws), "block": BLOCK if level == "fast" else None,
            "points": FAST_POINTS if level == "fast" else None, "n_proj": N_PROJ}


def cache_path(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / f"{name}.json"


FLOOR_KEYS = tuple(floor_name(m) + tail for m in METRICS for tail in ("", "_sd"))


def _valid(values) -> bool:
    return isinstance(values, dict) and all(
        isinstance(values.get(k), (int, float)) and not isinstance(values.get(k), bool)
        and math.isfinite(values[k]) for k in FLOOR_KEYS)


def load_floor(key: dict) -> dict | None:
    """The cached floor for `key`, or None when there is none or its file is unreadable,
    corrupt, or written for another key."""
    try:
        record = json.loads(cache_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or not _valid(record.get("floor")):
        return None
    return {k: float(record["floor"][k]) for k in FLOOR_KEYS}


def store_floor(key: dict, values: dict) -> Path | None:
    """Cache `values` under `key` (atomically); None if the cache folder cannot be written."""
    from dfc.io import atomic_write_json

    path = cache_path(key)
    try:
        return atomic_write_json(path, {"key": key, "floor": values})
    except (OSError, DfcError):
        return None
