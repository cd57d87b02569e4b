"""Kernel density estimates of s_p at any particle count (MATH §5, §10).

A Gaussian KDE with bandwidth h estimates the score of p_t * N(0, h²I):

    s_p^h(y) = (m_h(y) − y) / h²,   m_h(y) = Σ_j w_j x_j,   w_j ∝ exp(−|y − x_j|² / (2h²))

Three ways to evaluate it, one estimate (`method`):

- `exact`: every pair, in row blocks of bounded memory. O(N²) time.
- `binned` (D ≤ 3): linear binning of the particles on a grid of spacing ≤ h/4, convolution with
  the kernel and its gradient by FFT, multilinear interpolation back. O(N + G log G); the binning
  error is O(δ²/h²) (tested against `exact`).
- `subset`: the KDE of a fixed random subset of M particles (the same particle indices at every
  step). O(N·M); Scott's rule counts M, the sample the estimate actually uses.

The bandwidth is Scott's rule h = s·n^(−1/(D+4)) (s the mean per-coordinate std), or a given h,
and never below the stability floor of MATH §10 (`stable_bandwidth`): Scott's h shrinks as N grows,
so at a fixed step an explicit GAN step becomes unstable at large N unless h is floored.
"""

from __future__ import annotations

import math

import torch

KDE_CHUNK = 1 << 22  # pairwise entries per block of the exact KDE (its memory bound)
EXACT_MAX = 4096  # `auto` evaluates exactly up to this many particles
SUBSET_M = 1024  # `auto`'s subset size above EXACT_MAX in more than BINNED_MAX_DIM dimensions (in 16-D Scott's h at m = 1024 is within 4% of m = 2048's)
BINNED_MAX_DIM = 3
POINTS_PER_H = 8  # grid points per bandwidth of the binned KDE (spacing δ ≤ h/8, capped by GRID_CAP)
KERNEL_REACH = 5  # the binned kernel is cut at ±5h per coordinate (a relative weight e^(−12.5) ≈ 4e−6)
GRID_CAP = {1: 1 << 15, 2: 1024, 3: 96}  # the binned grid's points per dimension, at most
METHODS = ("auto", "exact", "binned", "subset")
CFL = 2.0  # default stability number (MATH §10): the GAN step contracts a cluster's variance error without overshoot


def stable_bandwidth(gan_step: float, sigma_x: float, cfl: float) -> float:
    """The least h for which one explicit GAN step of size `gan_step` = |w_gan|·Δt contracts (MATH §10).

    Linearised at p_t = Q_t, a Gaussian cluster of Q_t with per-coordinate variance V has its variance
    error multiplied per step by 1 − 2·gan_step·V/(V + h²)², in [1 − r/2, 1] with
    r = 4·gan_step·max_{V ≥ σ_x²} V/(V + h²)² (σ_x = σ/u: every cluster of Q_t carries the noise level).
    r ≤ cfl keeps the factor in [1 − cfl/2, 1] (cfl = 2: no overshoot; r > 4 diverges). With A = gan_step/cfl:

        h² ≥ A                    if A ≥ σ_x²
        h² ≥ 2 σ_x √A − σ_x²      if σ_x²/4 < A < σ_x²
        no floor (returns 0)      if A ≤ σ_x²/4
    """
    if cfl <= 0 or gan_step <= 0:
        return 0.0
    a, s2 = gan_step / cfl, sigma_x * sigma_x
    if a >= s2:
        return math.sqrt(a)
    if 4 * a > s2:
        return math.sqrt(2 * sigma_x * math.sqrt(a) - s2)
    return 0.0


def scott(population: torch.Tensor, n: int) -> float:
    """Scott's rule for n kernels: h = s · n^(−1/(D+4)), s the mean per-coordinate std."""
    d = population.shape[1]
    s = float(population.detach().std(0).mean())
    return max(s, 1e-12) * n ** (-1.0 / (d + 4))


class KDE:
    """Gaussian KDE of the population and its score at query points (module doc).

    `h`: a fixed bandwidth (None: Scott's rule). `method`: exact | binned | subset | auto (exact up to
    EXACT_MAX particles, then binned in ≤ 3 dimensions, else a subset of SUBSET_M). `m`: the subset size
    (implies `subset` when given with `auto`). `cfl`: the stability number of MATH §10 that the caller's
    floor h_min uses (`stable_bandwidth`; 0 turns the floor off)."""

    name = "kde"

    def __init__(self, h: float | None = None, method: str = "auto", m: int | None = None, cfl: float = CFL):
        if method not in METHODS:
            raise ValueError(method)
        self.h, self.method, self.m, self.cfl = h, method, m, cfl
        self._subsets: dict[tuple, torch.Tensor] = {}

    # ---- choices
    def method_for(self, n: int, d: int) -> str:
        if self.method != "auto":
            return self.method
        if self.m is not None:
            return "subset" if n > self.m else "exact"
        if n <= EXACT_MAX:
            return "exact"
        return "binned" if d <= BINNED_MAX_DIM else "subset"

    def subset_size(self, n: int) -> int:
        return min(n, self.m if self.m is not None else SUBSET_M)

    def bandwidth(self, population: torch.Tensor, h_min: float = 0.0) -> float:
        """h of this population: the given or Scott's, and at least h_min (the stability floor, MATH §10)."""
        n, d = population.shape
        kernels = self.subset_size(n) if self.method_for(n, d) == "subset" else n
        h = float(self.h) if self.h is not None else scott(population, kernels)
        return max(h, h_min)

    def __call__(self, x: torch.Tensor, t: float, need_logp: bool):
        s, logp, _ = self.query(x, x, t, need_logp)
        return s, logp

    def query(self, y: torch.Tensor, population: torch.Tensor, t: float, need_logp: bool, h_min: float = 0.0):
        """(score, log density or None, h) of the smoothed population law at the query points y."""
        n, d = population.shape
        h = self.bandwidth(population, h_min)
        method = self.method_for(n, d)
        if method == "binned":
            s, logp = binned_kde(y, population, h, need_logp)
        else:
            if method == "subset":
                population = population[self._subset(n, population.device)]
            s, logp = exact_kde(y, population, h, need_logp)
        return s, logp, h

    def _subset(self, n: int, device) -> torch.Tensor:
        """M particle indices, fixed for this N (particles keep their identity along a run)."""
        key = (n, str(device))
        idx = self._subsets.get(key)
        if idx is None:
            gen = torch.Generator().manual_seed(n)
            idx = torch.randperm(n, generator=gen)[: self.subset_size(n)].to(device)
            self._subsets[key] = idx
        return idx


# ---------------------------------------------------------------------------------------
# Exact (blocked)


def exact_kde(y: torch.Tensor, population: torch.Tensor, h: float, need_logp: bool):
    """Score (and log density) of population * N(0, h²I) at y, every pair, in row blocks."""
    n, d = population.shape
    inplace = not (torch.is_grad_enabled() and y.requires_grad)  # in-place ops save memory on the hot path
    sq_pop = (population * population).sum(1)
    sq_y = (y * y).sum(1)
    rows = max(1, KDE_CHUNK // n)
    scores, logps = [], []
    for i in range(0, y.shape[0], rows):
        yi = y[i : i + rows]
        d2 = sq_y[i : i + rows, None] + sq_pop[None, :] - 2 * yi @ population.T
        # softmax weights of the kernel, and log Σ exp for the density (one exp pass)
        if inplace:
            logits = d2.clamp_min_(0).mul_(-0.5 / h**2)
            top = logits.amax(1, keepdim=True)
            w = logits.sub_(top).exp_()
            total = w.sum(1, keepdim=True)
            w.div_(total)
        else:
            logits = d2.clamp_min(0) * (-0.5 / h**2)
            top = logits.amax(1, keepdim=True).detach()
            e = torch.exp(logits - top)
            total = e.sum(1, keepdim=True)
            w = e / total
        scores.append((w @ population - yi) / h**2)
        if need_logp:
            lse = top + torch.log(total)
            logps.append(lse[:, 0] - math.log(n) - 0.5 * d * math.log(2 * math.pi * h**2))
    return torch.cat(scores), (torch.cat(logps) if need_logp else None)


# ---------------------------------------------------------------------------------------
# Binned (linear binning + FFT convolution), D ≤ 3


def _corners(u: torch.Tensor, sizes: list[int]):
    """Multilinear interpolation weights: for grid coordinates u (N, D), the flat index and the
    weight of each of the 2^D surrounding grid points, as lists."""
    d = u.shape[1]
    base = u.floor().long()
    for k in range(d):  # the last cell's upper face belongs to the cell below it
        base[:, k].clamp_(0, sizes[k] - 2)
    frac = u - base
    strides = [1] * d
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * sizes[k + 1]
    out = []
    for corner in range(1 << d):
        idx = torch.zeros(u.shape[0], dtype=torch.long, device=u.device)
        w = torch.ones(u.shape[0], dtype=u.dtype, device=u.device)
        for k in range(d):
            up = (corner >> k) & 1
            idx += (base[:, k] + up) * strides[k]
            w = w * (frac[:, k] if up else 1 - frac[:, k])
        out.append((idx, w))
    return out


def binned_kde(y: torch.Tensor, population: torch.Tensor, h: float, need_logp: bool,
               points_per_h: float = POINTS_PER_H):
    """Score (and log density) of population * N(0, h²I) at y from a binned KDE (module doc): grid spacing
    δ ≤ h / points_per_h where GRID_CAP allows."""
    n, d = population.shape
    if d > BINNED_MAX_DIM:
        raise ValueError(f"the binned KDE works in at most {BINNED_MAX_DIM} dimensions")
    dt = torch.float64  # the grid sums N kernels: keep the tails' relative precision
    pop, yq = population.detach().to(dt), y.detach().to(dt)
    lo = torch.minimum(pop.amin(0), yq.amin(0))
    hi = torch.maximum(pop.amax(0), yq.amax(0))
    span = (hi - lo).clamp_min(1e-12 * max(h, 1e-300))
    sizes = [int(min(GRID_CAP[d], max(4, math.ceil(float(s) * points_per_h / h) + 1))) for s in span]
    delta = span / torch.tensor([g - 1 for g in sizes], dtype=dt, device=pop.device)
    # 1. linear binning of the particles
    counts = torch.zeros(math.prod(sizes), dtype=dt, device=pop.device)
    for idx, w in _corners((pop - lo) / delta, sizes):
        counts.index_add_(0, idx, w)
    counts = counts.reshape(sizes)
    # 2. kernel and its gradient on the grid offsets, convolved by FFT (zero-padded: a linear convolution)
    half = [min(g - 1, math.ceil(KERNEL_REACH * h / float(dk))) for g, dk in zip(sizes, delta)]
    fft_shape = [g + k for g, k in zip(sizes, half)]
    axes = [torch.arange(-k, k + 1, dtype=dt, device=pop.device) * dk for k, dk in zip(half, delta)]
    offs = torch.meshgrid(*axes, indexing="ij")
    kern = torch.exp(-0.5 * sum(o * o for o in offs) / h**2)
    dims = tuple(range(d))
    spectrum = torch.fft.rfftn(counts, s=fft_shape, dim=dims)

    def convolve(k: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros(fft_shape, dtype=dt, device=pop.device)
        padded[tuple(slice(0, 2 * kk + 1) for kk in half)] = k
        padded = torch.roll(padded, shifts=[-kk for kk in half], dims=dims)  # offset 0 at index 0
        full = torch.fft.irfftn(spectrum * torch.fft.rfftn(padded, dim=dims), s=fft_shape, dim=dims)
        return full[tuple(slice(0, g) for g in sizes)].reshape(-1)

    density = convolve(kern)  # Σ_j K(y − x_j)
    # ∇_y Σ_j K(y − x_j) = Σ_j −(y − x_j)/h² K(y − x_j): the offset o = y − x_j
    grads = [convolve(-o * kern / h**2) for o in offs]
    # 3. back to the query points
    dens = torch.zeros(yq.shape[0], dtype=dt, device=pop.device)
    grad = torch.zeros(yq.shape, dtype=dt, device=pop.device)
    for idx, w in _corners((yq - lo) / delta, sizes):
        dens += w * density[idx]
        for k in range(d):
            grad[:, k] += w * grads[k][idx]
    tiny = torch.finfo(dt).tiny
    dens = dens.clamp_min(tiny)
    score = (grad / dens[:, None]).to(y.dtype)
    logp = None
    if need_logp:
        logp = (torch.log(dens) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h**2)).to(y.dtype)
    return score, logp
