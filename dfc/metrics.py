"""Sample-quality metrics: distances between point clouds and between Gaussians.

Every function takes point clouds as `(N, D)` arrays — torch tensors on any device, numpy
arrays or nested lists — and works in float64 internally on the device of the first argument.
A 1-D input of shape `(N,)` is read as `N` points in one dimension. Results are plain floats
(a `(value, standard error)` pair of floats for `sliced_w2_se`, `mmd_block`, `energy_block`).

- `sliced_w2`: sliced 2-Wasserstein distance (random projections fixed by `seed`).
- `sliced_w2_se`: the same distance and its Monte Carlo standard error over the directions.
- `mmd`: square root of the unbiased multi-scale RBF MMD² estimate (clipped at 0).
- `energy_distance`: square root of the unbiased energy distance (clipped at 0).
- `mmd_block`, `energy_block`: block estimates of MMD² and of the (squared) energy distance
  with a standard error, in O(N · block) time instead of O(N²) (see "Block estimates").
- `root_se`: carries a standard error of a squared distance over to the distance itself.
- `gaussian_w2`, `gaussian_kl`: closed forms between two Gaussians.
- `fit_gaussian`: sample mean and covariance.
- `mode_metrics`: for mixtures, the share of modes captured and of high-quality samples.

Pairwise computations are done in row blocks so that no more than about 2^26 float64 values
are alive at once, whatever the sample sizes. A sum over the pairs of one cloud is taken over
the pairs i < j only (half the kernel evaluations) and doubled.

One cloud, many comparisons. A benchmark measures many samples against one reference draw.
What a metric needs of one cloud alone — its sorted projections (sliced W2; clouds of up to
`_SORTED_MAX` projected values), its within-cloud kernel or distance sums (MMD, energy
distance) — is computed on that cloud's own centred copy, so it does not depend on the other
cloud, and is remembered in this process: keyed by a digest of the cloud's bytes (dtype and
shape included) and what was computed of it, so a remembered value is the one a fresh
computation gives, bit for bit (at the same thread count, which is part of the key). Least
recently used entries go first; CUDA tensors are not remembered (hashing them would copy them to
the host).

Block estimates. `mmd_block(a, b, scales, block, seed)` and `energy_block(a, b, block, seed)`
shuffle both samples (a fixed permutation drawn from `seed`), cut them into the same number B
of blocks, B = max(ceil(N/block), ceil(M/block)) (so blocks hold at most `block` points; the
blocks of the two samples are paired in order and their sizes stay proportional to N and M
when N != M), compute the unbiased quadratic statistic on each block pair and average:
the mean of B unbiased estimates is unbiased. The standard error is the standard deviation
of the B block values divided by sqrt(B). Each block needs two points of each sample, so B
is at most min(N, M) // 2 (blocks may then exceed `block` points). The cost is
O((N + M) · block) kernel evaluations. When both samples fit in one block (N, M <= block)
the result is exactly the quadratic estimate of `mmd`/`energy_distance` (squared, before
clipping at 0: it can be slightly negative) and the standard error is NaN: one block has no
spread to measure, and the quadratic estimate's own error is best judged by its floor (the
spread of the statistic between independent draws of the same law, see `dfc.floors`).

Standard errors of distances. `mmd_block` and `energy_block` return squared quantities; the
distance is sqrt(max(v, 0)). `root_se(v, se)` gives its error as the half width of the
interval [v - se, v + se] mapped through sqrt(max(., 0)): se / (2 sqrt(v)) (the delta
method) when se << v, and about sqrt(se)/2 near v = 0, where the delta method breaks down.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dfc.errors import DataError

__all__ = [
    "projection_directions",
    "sliced_w2",
    "sliced_w2_se",
    "mmd",
    "default_mmd_scales",
    "energy_distance",
    "mmd_block",
    "energy_block",
    "root_se",
    "gaussian_w2",
    "gaussian_kl",
    "fit_gaussian",
    "hq_radius",
    "mode_metrics",
]

# Largest number of float64 values in one block of pairwise distances or projections. A
# block computation holds a few temporaries of this size, so the peak stays far under ~2^26
# elements; blocks of ~8 MB are also much faster than huge ones (allocation and cache costs
# dominate the arithmetic).
_BLOCK_ELEMENTS = 1 << 20

# Multipliers of the median pairwise distance used as default MMD bandwidths.
_MMD_SCALE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
_MMD_MEDIAN_POINTS = 2000


# --------------------------------------------------------------------------- input checks


def _as_points(
    x: Any, name: str, func: str, device: torch.device | None = None, min_points: int = 1
) -> torch.Tensor:
    """Return `x` as a finite float64 tensor of shape (N, D) on `device`."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{func}: argument `{name}` is not a numeric array ({exc}); "
                "pass an (N, D) tensor or array of numbers."
            ) from None
    if t.is_complex():
        raise DataError(
            f"{func}: argument `{name}` is complex; pass real-valued samples of shape (N, D)."
        )
    # contiguous: a cloud's results (and its remembered terms, keyed by its bytes) do not depend on its layout
    t = t.to(dtype=torch.float64, device=device if device is not None else t.device).contiguous()
    if t.dim() == 1:
        t = t.unsqueeze(1)
    if t.dim() != 2:
        raise DataError(
            f"{func}: argument `{name}` has shape {tuple(t.shape)}, but a point cloud must have "
            "shape (N, D); flatten each sample to a vector first."
        )
    if t.shape[0] < min_points:
        raise DataError(
            f"{func}: argument `{name}` has {t.shape[0]} points, but at least {min_points} "
            "are needed; draw more samples."
        )
    if t.shape[1] < 1:
        raise DataError(
            f"{func}: argument `{name}` has shape {tuple(t.shape)} with zero dimensions per "
            "point; pass samples of shape (N, D) with D >= 1."
        )
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t).all(dim=1)).sum())
        raise DataError(
            f"{func}: argument `{name}` has {bad} of {t.shape[0]} points with NaN or infinite "
            "coordinates; drop or fix the non-finite samples before computing metrics."
        )
    return t


def _as_pair(
    a: Any, b: Any, func: str, min_points: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    ta = _as_points(a, "a", func, min_points=min_points)
    tb = _as_points(b, "b", func, device=ta.device, min_points=min_points)
    if ta.shape[1] != tb.shape[1]:
        raise DataError(
            f"{func}: `a` has {ta.shape[1]} dimensions per point but `b` has {tb.shape[1]}; "
            "compare samples of the same dimension."
        )
    return ta, tb


# --------------------------------------------------------------------------- sliced W2


def projection_directions(
    dim: int, n_proj: int = 256, seed: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The `(n_proj, dim)` float64 unit directions `sliced_w2` uses for this `seed`.

    They are drawn on the CPU from a `torch.Generator` seeded with `seed`, so they are the
    same on every device and in every call.
    """
    if int(dim) < 1 or int(n_proj) < 1:
        raise DataError(
            f"projection_directions: dim={dim} and n_proj={n_proj} must both be at least 1; "
            "pass positive sizes."
        )
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    theta = torch.randn((int(n_proj), int(dim)), generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return theta.to(device) if device is not None else theta


def _quantiles(sorted_vals: torch.Tensor, k: int) -> torch.Tensor:
    """Empirical quantile function of each row of `sorted_vals` (P, n), evaluated at the `k`
    mid-levels u_i = (i + 1/2)/k: Q(u) = x_(floor(u n)) (0-based order statistics), the exact
    step-function quantile of the empirical law. When n == k this is the sorted row itself,
    and a set compared with a copy of itself repeated r times gives exactly 0."""
    n = sorted_vals.shape[1]
    if n == k:
        return sorted_vals
    levels = (torch.arange(k, dtype=torch.float64, device=sorted_vals.device) + 0.5) / k
    idx = torch.floor(levels * n).long().clamp_(0, n - 1)
    return sorted_vals[:, idx]


def _sort_rows(t: torch.Tensor) -> torch.Tensor:
    """Each row of `t` sorted ascending. On the CPU numpy's sort is used: it gives the same
    values as torch.sort, several times faster."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.sort(t.numpy(), axis=1))
    return torch.sort(t, dim=1).values


def _sorted_projections(t: torch.Tensor, theta: torch.Tensor, seed: int) -> torch.Tensor | None:
    """The sorted projections (P, N) of the centred cloud t - mean(t) on every direction of
    `theta` (those of `projection_directions(D, P, seed)`), remembered per cloud (module doc);
    None for a cloud too large to hold them all (the caller then projects chunk by chunk)."""
    if theta.shape[0] * t.shape[0] > _SORTED_MAX:
        return None
    key = _cloud_key(t, ("sorted projections", theta.shape[0], int(seed)))
    return _SORTED.get(key, lambda: _sort_rows(theta @ (t - t.mean(dim=0)).T))


def _sliced_w2_chunks(a: Any, b: Any, n_proj: int, seed: int, func: str):
    """Yield the 1-D W2² of each projection direction, a chunk of directions at a time.

    Each cloud is centred on its own mean and the difference of the means projected back in:
    along θ, W2² = mean over the levels u of (Qa(u) - Qb(u) + θ·(ma - mb))², Qa and Qb the
    quantile functions of the centred clouds. The value is that of the uncentred clouds; the
    rounding is smaller, and each cloud's sorted projections depend on it alone (module doc)."""
    ta, tb = _as_pair(a, b, func)
    if int(n_proj) < 1:
        raise DataError(f"{func}: n_proj={n_proj} must be at least 1; pass a positive count.")
    n, m, d = ta.shape[0], tb.shape[0], ta.shape[1]
    k = max(n, m)
    theta = projection_directions(d, n_proj, seed, device=ta.device)
    shift = theta @ (ta.mean(dim=0) - tb.mean(dim=0))  # (P,)
    whole_a, whole_b = _sorted_projections(ta, theta, seed), _sorted_projections(tb, theta, seed)
    ca = ta - ta.mean(dim=0) if whole_a is None else None
    cb = tb - tb.mean(dim=0) if whole_b is None else None
    chunk = max(1, _BLOCK_ELEMENTS // k)
    for p0 in range(0, theta.shape[0], chunk):
        p1 = min(theta.shape[0], p0 + chunk)  # projections laid out (p, N) to sort rows
        pa = whole_a[p0:p1] if whole_a is not None else _sort_rows(theta[p0:p1] @ ca.T)
        pb = whole_b[p0:p1] if whole_b is not None else _sort_rows(theta[p0:p1] @ cb.T)
        diff = _quantiles(pa, k) - _quantiles(pb, k) + shift[p0:p1].unsqueeze(1)
        yield (diff * diff).mean(dim=1)


def sliced_w2(a: Any, b: Any, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between point clouds `a` (N, D) and `b` (M, D).

    Both clouds are projected on the `n_proj` unit directions of
    `projection_directions(D, n_proj, seed)`; for each direction the 1-D W2² is the mean
    squared difference of the sorted projections (N == M) or of the two empirical (step)
    quantile functions evaluated on a common grid of K = max(N, M) mid-levels (i + 1/2)/K
    (N != M; exact when K is a multiple of min(N, M)). The result is
    sqrt(mean over directions of W2²).
    """
    total = 0.0
    for w in _sliced_w2_chunks(a, b, n_proj, seed, "sliced_w2"):
        total += float(w.sum())
    return math.sqrt(max(total / int(n_proj), 0.0))


def sliced_w2_se(a: Any, b: Any, n_proj: int = 256, seed: int = 0) -> tuple[float, float]:
    """`(sliced_w2(a, b, n_proj, seed), se)`: the distance and its Monte Carlo standard error
    over the random directions.

    With w_k the 1-D W2² along direction k (k = 1..P), the distance is sqrt(w̄) and
    se = sd(w) / (sqrt(P) · 2 sqrt(w̄)) (the delta method; 0 when w̄ = 0). It measures how
    much the value would move with another set of directions, not the sampling error of the
    two clouds themselves (that is what a floor measures). Needs n_proj >= 2 for an error
    (with one direction se is NaN)."""
    parts = list(_sliced_w2_chunks(a, b, n_proj, seed, "sliced_w2_se"))
    total = 0.0
    for w in parts:
        total += float(w.sum())
    p = int(n_proj)
    mean = max(total / p, 0.0)
    value = math.sqrt(mean)
    if p < 2:
        return value, math.nan
    w = torch.cat(parts)
    se_mean = float(w.std()) / math.sqrt(p)
    return value, (se_mean / (2.0 * value) if value > 0.0 else 0.0)


# --------------------------------------------------------------------------- pairwise sums


def _pair_sum(x: torch.Tensor, y: torch.Tensor, fn) -> float:
    """Sum of fn(squared distance) over all pairs (x_i, y_j), in row blocks of bounded size."""
    m = y.shape[0]
    xx = (x * x).sum(dim=1)
    yy = (y * y).sum(dim=1)
    rows = max(1, _BLOCK_ELEMENTS // max(m, 1))
    total = 0.0
    for i0 in range(0, x.shape[0], rows):
        i1 = min(x.shape[0], i0 + rows)
        d2 = torch.addmm(yy.unsqueeze(0), x[i0:i1], y.T, beta=1.0, alpha=-2.0)
        d2.add_(xx[i0:i1].unsqueeze(1)).clamp_min_(0.0)
        total += float(fn(d2).sum())
    return total


def _self_pair_sum(x: torch.Tensor, fn) -> float:
    """Sum of fn(squared distance) over the ordered pairs i != j of one cloud: twice the sum
    over i < j. Row block [i0, i1) is paired with columns i0.. only, and in its leading square
    the pairs j <= i are masked out, so about n (n + rows) / 2 kernel values are computed
    instead of n²."""
    n = x.shape[0]
    xx = (x * x).sum(dim=1)
    rows = max(1, min(_SELF_ROWS, _BLOCK_ELEMENTS // max(n, 1)))
    total = 0.0
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        d2 = torch.addmm(xx[i0:].unsqueeze(0), x[i0:i1], x[i0:].T, beta=1.0, alpha=-2.0)
        d2.add_(xx[i0:i1].unsqueeze(1)).clamp_min_(0.0)
        vals = fn(d2)
        head = vals[:, : i1 - i0]
        upper = torch.ones_like(head, dtype=torch.bool).triu_(diagonal=1)
        total += float(head[upper].sum()) + float(vals[:, i1 - i0 :].sum())
    return 2.0 * total


def _self_mean(t: torch.Tensor, fn, kind: tuple) -> float:
    """Mean of fn(|t_i - t_j|²) over the pairs i != j of cloud t (at least 2 points), computed
    on its own centred copy and remembered per cloud (module doc); `kind` names fn."""
    n = t.shape[0]
    return _SELF.get(_cloud_key(t, kind), lambda: _self_pair_sum(t - t.mean(dim=0), fn) / (n * (n - 1)))


def _cross_mean(ta: torch.Tensor, tb: torch.Tensor, fn) -> float:
    """Mean of fn(|a_i - b_j|²) over all pairs, both clouds shifted by the same vector (the
    midpoint of their means: distances unchanged, rounding smaller)."""
    centre = 0.5 * (ta.mean(dim=0) + tb.mean(dim=0))
    return _pair_sum(ta - centre, tb - centre, fn) / (ta.shape[0] * tb.shape[0])


# --------------------------------------------------------------------------- one cloud's own terms


class _Memo:
    """At most `entries` values, least recently used dropped first (module doc)."""

    def __init__(self, entries: int):
        self.entries = entries
        self.store: OrderedDict = OrderedDict()

    def get(self, key, compute: Callable):
        if key is None:
            return compute()
        if key in self.store:
            self.store.move_to_end(key)
            return self.store[key]
        value = compute()
        self.store[key] = value
        if len(self.store) > self.entries:
            self.store.popitem(last=False)
        return value


def _cloud_key(t: torch.Tensor, kind: tuple) -> tuple | None:
    """What identifies `kind` computed of cloud t: a digest of its bytes, dtype and shape, and torch's
    thread count (a reduction's last bits depend on it); None (not remembered) for a tensor that is
    not contiguous in host memory."""
    if t.device.type != "cpu" or not t.is_contiguous():
        return None
    arr = t.detach().numpy()
    digest = hashlib.blake2b(f"{arr.dtype.str} {arr.shape}".encode(), digest_size=16)
    digest.update(arr.data)
    return (digest.hexdigest(), torch.get_num_threads(), *kind)


_SELF = _Memo(8192)  # within-cloud means: a float each
_SORTED = _Memo(2)  # sorted projections: up to _SORTED_MAX float64 values each
_SORTED_MAX = 1 << 23  # 64 MiB: 256 directions of up to 32,768 points
_SELF_ROWS = 128  # row block of a within-cloud sum (its leading square is half wasted)


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Distances between all pairs i < j of a small point set (used for the median)."""
    x = x - x.mean(dim=0)
    sq = (x * x).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.T)).clamp_min_(0.0)
    iu = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return d2[iu[0], iu[1]].sqrt()


def default_mmd_scales(a: Any, b: Any) -> list[float]:
    """The default `mmd` bandwidths: the median pairwise distance of the pooled sample
    (estimated on at most 2,000 points, chosen with a fixed seed) times 0.25, 0.5, 1, 2, 4."""
    ta, tb = _as_pair(a, b, "mmd")
    pooled = torch.cat([ta, tb], dim=0)
    if pooled.shape[0] > _MMD_MEDIAN_POINTS:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0)
        pick = torch.randperm(pooled.shape[0], generator=gen)[:_MMD_MEDIAN_POINTS]
        pooled = pooled[pick.to(pooled.device)]
    dists = _pairwise_distances(pooled)
    med = float(dists.median()) if dists.numel() else 0.0
    if not med > 0.0:
        # Over half the pairs coincide (e.g. point masses): fall back to the mean distance.
        mean = float(dists.mean()) if dists.numel() else 0.0
        med = mean if mean > 0.0 else 1.0
    return [med * f for f in _MMD_SCALE_FACTORS]


def _rbf_sum(bandwidths: Sequence[float]):
    """fn(d2) = Σ_s exp(-d2 / (2 s²)). Bandwidths whose kernel is a power 2^j of the
    widest one's (e.g. the default scales, which differ by factors of 2) are obtained by
    repeated squaring instead of another exp, which is several times cheaper. `fn.kind`
    names the kernel (for `_self_mean`)."""
    coefs = sorted((0.5 / (s * s) for s in bandwidths))  # widest bandwidth first
    c0 = coefs[0]
    plan: list[int | float] = []  # number of squarings of the base, or a coefficient
    for c in coefs:
        j = math.log2(c / c0)
        jr = round(j)
        plan.append(jr if abs(j - jr) < 1e-9 and jr <= 12 else c)

    def fn(d2: torch.Tensor) -> torch.Tensor:
        base = torch.exp(d2 * -c0)
        acc = torch.zeros_like(d2)
        cur, cur_j = base, 0
        for step in plan:
            if isinstance(step, int):
                while cur_j < step:
                    cur = cur * cur
                    cur_j += 1
                acc.add_(cur)
            else:
                acc.add_(torch.exp(d2 * -step))
        return acc

    fn.kind = ("rbf", *coefs)
    return fn


def _bandwidths(ta: torch.Tensor, tb: torch.Tensor, scales: Sequence[float] | None, func: str) -> list[float]:
    if scales is None:
        return default_mmd_scales(ta, tb)
    try:
        bw = [float(s) for s in scales]
    except (TypeError, ValueError):
        raise DataError(
            f"{func}: `scales` must be a list of positive bandwidths; pass e.g. [0.5, 1.0, 2.0] "
            "or leave it out for the median heuristic."
        ) from None
    if not bw or not all(math.isfinite(s) and s > 0.0 for s in bw):
        raise DataError(
            f"{func}: `scales` = {bw} must be a non-empty list of positive finite bandwidths; "
            "fix the values or leave `scales` out for the median heuristic."
        )
    return bw


def _mmd2_u(ta: torch.Tensor, tb: torch.Tensor, kernel) -> float:
    """Unbiased MMD² of two clouds of at least 2 points each."""
    kxx, kyy = _self_mean(ta, kernel, kernel.kind), _self_mean(tb, kernel, kernel.kind)
    return kxx + kyy - 2.0 * _cross_mean(ta, tb, kernel)


def _energy2_u(ta: torch.Tensor, tb: torch.Tensor) -> float:
    """Unbiased squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| of two clouds of
    at least 2 points each."""
    exx, eyy = _self_mean(ta, torch.sqrt, ("distance",)), _self_mean(tb, torch.sqrt, ("distance",))
    return 2.0 * _cross_mean(ta, tb, torch.sqrt) - exx - eyy


def mmd(a: Any, b: Any, scales: Sequence[float] | None = None) -> float:
    """Multi-scale RBF maximum mean discrepancy between `a` (N, D) and `b` (M, D).

    The kernel is k(x, y) = Σ_s exp(-|x - y|² / (2 s²)) over the bandwidths `scales`
    (default: `default_mmd_scales(a, b)`). Returns sqrt(max(MMD²_u, 0)) where MMD²_u is the
    unbiased estimate (within-sample means leave out the i == j pairs). Needs N, M >= 2.
    """
    ta, tb = _as_pair(a, b, "mmd", min_points=2)
    kernel = _rbf_sum(_bandwidths(ta, tb, scales, "mmd"))
    return math.sqrt(max(_mmd2_u(ta, tb, kernel), 0.0))


def energy_distance(a: Any, b: Any) -> float:
    """Energy distance between `a` (N, D) and `b` (M, D):
    sqrt(max(2 E|X - Y| - E|X - X'| - E|Y - Y'|, 0)), with the within-sample means taken
    over pairs i != j (unbiased). Needs N, M >= 2."""
    ta, tb = _as_pair(a, b, "energy_distance", min_points=2)
    return math.sqrt(max(_energy2_u(ta, tb), 0.0))


# --------------------------------------------------------------------------- block estimates


def _check_block(block: Any, func: str) -> int:
    try:
        size = int(block)
    except (TypeError, ValueError):
        size = 0
    if size < 2 or size != block:
        raise DataError(
            f"{func}: block={block!r} must be a whole number of at least 2 points; pass e.g. 1024."
        )
    return size


def _blocks(n: int, m: int, block: int, seed: int, device: torch.device):
    """Index blocks of the two shuffled samples, paired in order (module doc, Block estimates)."""
    nb = max(math.ceil(n / block), math.ceil(m / block))
    nb = max(1, min(nb, n // 2, m // 2))
    if nb == 1:
        return None
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    pa = torch.randperm(n, generator=gen).to(device)
    pb = torch.randperm(m, generator=gen).to(device)
    return list(zip(torch.tensor_split(pa, nb), torch.tensor_split(pb, nb)))


def _block_estimate(ta: torch.Tensor, tb: torch.Tensor, stat, block: int, seed: int) -> tuple[float, float]:
    pairs = _blocks(ta.shape[0], tb.shape[0], block, seed, ta.device)
    if pairs is None:
        return stat(ta, tb), math.nan
    vals = np.array([stat(ta[ia], tb[ib]) for ia, ib in pairs])
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(len(vals)))


def mmd_block(
    a: Any, b: Any, scales: Sequence[float] | None = None, block: int = 1024, seed: int = 0
) -> tuple[float, float]:
    """Block estimate `(MMD², se)` of the multi-scale RBF MMD² of `mmd` between `a` (N, D) and
    `b` (M, D), in O((N + M) · block) time (module doc, Block estimates).

    The bandwidths are `scales`, default `default_mmd_scales(a, b)` of the whole samples (the
    same kernel `mmd` uses). MMD² is not clipped at 0; the distance is sqrt(max(MMD², 0)),
    and `root_se(MMD², se)` its error. When N, M <= `block` this is exactly `mmd(a, b)`²
    (before clipping) with se = NaN. Needs N, M >= 2."""
    ta, tb = _as_pair(a, b, "mmd_block", min_points=2)
    size = _check_block(block, "mmd_block")
    kernel = _rbf_sum(_bandwidths(ta, tb, scales, "mmd_block"))
    return _block_estimate(ta, tb, lambda x, y: _mmd2_u(x, y, kernel), size, seed)


def energy_block(a: Any, b: Any, block: int = 1024, seed: int = 0) -> tuple[float, float]:
    """Block estimate `(E², se)` of the squared energy distance
    E² = 2 E|X - Y| - E|X - X'| - E|Y - Y'| between `a` (N, D) and `b` (M, D), in
    O((N + M) · block) time (module doc, Block estimates). E² is not clipped at 0;
    `energy_distance` is sqrt(max(E², 0)) and `root_se(E², se)` its error. When N, M <=
    `block` this is exactly `energy_distance(a, b)`² (before clipping) with se = NaN.
    Needs N, M >= 2."""
    ta, tb = _as_pair(a, b, "energy_block", min_points=2)
    size = _check_block(block, "energy_block")
    return _block_estimate(ta, tb, _energy2_u, size, seed)


def root_se(value: float, se: float) -> float:
    """Standard error of sqrt(max(value, 0)) given the standard error `se` of `value` (a
    squared distance): half the width of [value - se, value + se] mapped through
    sqrt(max(., 0)). It is the delta method's se / (2 sqrt(value)) when se << value, and
    stays finite (about sqrt(se)/2) near value = 0. NaN when `se` is NaN."""
    value, se = float(value), float(se)
    if not (math.isfinite(value) and math.isfinite(se)):
        return math.nan
    se = abs(se)
    return 0.5 * (math.sqrt(max(value + se, 0.0)) - math.sqrt(max(value - se, 0.0)))


# --------------------------------------------------------------------------- Gaussians


def _to_numpy(x: Any, name: str, func: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{func}: argument `{name}` is not a numeric array ({exc}); pass numbers."
        ) from None
    if not np.all(np.isfinite(arr)):
        raise DataError(
            f"{func}: argument `{name}` contains NaN or infinite values; pass a finite "
            f"{'mean vector' if name.startswith('mean') else 'covariance matrix'}."
        )
    return arr


def _as_gaussian(mean: Any, cov: Any, idx: int, func: str) -> tuple[np.ndarray, np.ndarray]:
    m = _to_numpy(mean, f"mean{idx}", func).reshape(-1)
    c = _to_numpy(cov, f"cov{idx}", func)
    d = m.shape[0]
    if c.size == 1 and d == 1:
        c = c.reshape(1, 1)
    if c.shape != (d, d):
        raise DataError(
            f"{func}: `cov{idx}` has shape {c.shape} but `mean{idx}` has {d} entries; pass a "
            f"({d}, {d}) covariance matrix."
        )
    scale = max(float(np.abs(c).max()), 1e-300)
    if float(np.abs(c - c.T).max()) > 1e-6 * scale:
        raise DataError(
            f"{func}: `cov{idx}` is not symmetric; pass a symmetric covariance matrix "
            "(e.g. (C + C.T) / 2)."
        )
    return m, 0.5 * (c + c.T)


def _check_same_dim(m1: np.ndarray, m2: np.ndarray, func: str) -> None:
    if m1.shape[0] != m2.shape[0]:
        raise DataError(
            f"{func}: the first Gaussian has dimension {m1.shape[0]} but the second has "
            f"{m2.shape[0]}; compare Gaussians of the same dimension."
        )


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_w2(mean1: Any, cov1: Any, mean2: Any, cov2: Any) -> float:
    """2-Wasserstein distance between N(mean1, cov1) and N(mean2, cov2):
    sqrt(|m1 - m2|² + tr(C1 + C2 - 2 (C2^½ C1 C2^½)^½)). Covariances may be singular."""
    func = "gaussian_w2"
    m1, c1 = _as_gaussian(mean1, cov1, 1, func)
    m2, c2 = _as_gaussian(mean2, cov2, 2, func)
    _check_same_dim(m1, m2, func)
    s2 = _psd_sqrt(c2)
    mid = s2 @ c1 @ s2
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (mid + mid.T)), 0.0, None)).sum())
    w2sq = float(np.sum((m1 - m2) ** 2)) + float(np.trace(c1) + np.trace(c2)) - 2.0 * cross
    return math.sqrt(max(w2sq, 0.0))


def _cholesky(c: np.ndarray, name: str, func: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise DataError(
            f"{func}: `{name}` is not positive definite, so the KL divergence is undefined; "
            "pass a full-rank covariance (e.g. add a small multiple of the identity)."
        ) from None


def gaussian_kl(mean1: Any, cov1: Any, mean2: Any, cov2: Any) -> float:
    """KL(N(mean1, cov1) ‖ N(mean2, cov2)) in nats, closed form. Both covariances must be
    positive definite."""
    from scipy.linalg import solve_triangular

    func = "gaussian_kl"
    m1, c1 = _as_gaussian(mean1, cov1, 1, func)
    m2, c2 = _as_gaussian(mean2, cov2, 2, func)
    _check_same_dim(m1, m2, func)
    l1 = _cholesky(c1, "cov1", func)
    l2 = _cholesky(c2, "cov2", func)
    d = m1.shape[0]
    a = solve_triangular(l2, l1, lower=True)  # L2⁻¹ L1: tr(C2⁻¹ C1) = |A|_F²
    z = solve_triangular(l2, m2 - m1, lower=True)
    logdet1 = 2.0 * float(np.log(np.diag(l1)).sum())
    logdet2 = 2.0 * float(np.log(np.diag(l2)).sum())
    kl = 0.5 * (float(np.sum(a * a)) + float(z @ z) - d + logdet2 - logdet1)
    return max(kl, 0.0)


def fit_gaussian(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean `(D,)` and unbiased sample covariance `(D, D)` of `x` (N, D), N >= 2,
    as float64 numpy arrays (computed in torch on the input's device)."""
    t = _as_points(x, "x", "fit_gaussian", min_points=2)
    mean = t.mean(dim=0)
    xc = t - mean
    cov = (xc.T @ xc) / (t.shape[0] - 1)
    cov = 0.5 * (cov + cov.T)
    return mean.cpu().numpy(), cov.cpu().numpy()


def hq_radius(std: float, dim: int, k: float = 3.0) -> float:
    """Radius of the ball around a component mean that counts as "within k std" in `dim`
    dimensions: the ball holding the same mass of N(m, std² I) as ±k std holds in one
    dimension (erf(k/√2) = 99.73% for k = 3), r = std · sqrt(χ²_dim quantile at that mass).
    In one dimension it is exactly k·std; in 2-D (k = 3) 3.44·std, in 16-D 6.04·std, so a
    sample from the mixture itself is high quality with probability 99.73% in any dimension."""
    from scipy.stats import chi2

    mass = math.erf(k / math.sqrt(2.0))
    return float(std) * math.sqrt(float(chi2.ppf(mass, int(dim))))


def mode_metrics(x: Any, means: Any, stds: Any, k: float = 3.0, min_share: float = 0.1) -> dict[str, float]:
    """Mixture quality (the ring/grid benchmarks of the GAN literature, in any dimension).

    - ``hq``: the share of high-quality samples, those within `k` std of some component mean
      (inside the ball of radius `hq_radius(s_j, D, k)` around m_j).
    - ``modes``: the share of components captured: a component is captured when the
      high-quality samples nearest to it (in units of its radius) number at least `min_share`
      of its fair share N/K.

    Known answers: a large sample of the mixture itself gives hq ≈ 0.9973 (k = 3) and
    modes = 1; samples piled on one mean of K give modes = 1/K, hq = 1.
    """
    pts = _as_points(x, "x", "mode_metrics")
    m = torch.as_tensor(np.asarray(means, dtype=np.float64) if not isinstance(means, torch.Tensor) else means,
                        dtype=torch.float64).to(pts.device)
    if m.dim() != 2 or m.shape[1] != pts.shape[1]:
        raise DataError(f"mode_metrics: `means` has shape {tuple(m.shape)}, but K means of the samples' "
                        f"{pts.shape[1]} dimensions are needed; pass a (K, D) array.")
    s = torch.as_tensor(np.asarray(stds, dtype=np.float64) if not isinstance(stds, torch.Tensor) else stds,
                        dtype=torch.float64).to(pts.device).reshape(-1).expand(m.shape[0])
    if not bool((s > 0).all()) or not k > 0:
        raise DataError("mode_metrics: `stds` and `k` must be > 0; pass the components' standard deviations.")
    radius = s * (hq_radius(1.0, m.shape[1], k))
    scaled = torch.cdist(pts, m) / radius[None, :]  # (N, K): distance in units of each radius
    nearest, owner = scaled.min(dim=1)
    good = nearest <= 1.0
    counts = torch.bincount(owner[good], minlength=m.shape[0]).double()
    fair = pts.shape[0] / m.shape[0]
    return {"modes": float((counts >= min_share * fair).double().mean()), "hq": float(good.double().mean())}
