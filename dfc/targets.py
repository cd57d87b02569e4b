"""Target distributions with closed-form noisy log densities and scores.

A target is a data distribution ``q`` on R^D. For a noise level ``sigma >= 0`` it gives, exactly,

* ``log_prob(y, sigma)``  = log q_sigma(y),            shape (N,)
* ``score(y, sigma)``     = grad_y log q_sigma(y),     shape (N, D)

where ``q_sigma = q * N(0, sigma^2 I)`` is q smoothed by Gaussian noise of standard deviation sigma
(MATH §1, §5). ``y`` may have any leading batch shape ``(..., D)``; the results then have shape
``(...)`` and ``(..., D)``. All computation happens in the dtype and on the device of ``y``; the
parameters of a target are kept as a float64 (or the data's own float) master copy on the CPU and
cast once per (dtype, device), then cached.

Numerical conventions (all documented where they matter):

* Mixture sums are done in log space with the largest term factored out. Terms smaller than
  e^-80 relative to the largest are floored at e^-80 before exponentiation (so the result is
  exact to far below float64 rounding, and ``exp`` never has to produce denormals, which is
  ~10x slower on CPU).
* ``BoxUnion``/``Checkerboard`` and ``DataSet`` have no density at sigma = 0 (a box edge is a
  jump, a finite set is a set of atoms). For them sigma is clamped to at least ``SIGMA_FLOOR``
  (1e-6).
* A ``sigma`` given as a python number is checked to be finite and >= 0 (ConfigError otherwise).
  A tensor sigma is checked only when it lives on the CPU (checking a GPU value would force a
  device synchronisation on the hot path).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from dfc.errors import ConfigError, DataError

__all__ = [
    "Target",
    "Gaussian",
    "GaussianMixture",
    "BoxUnion",
    "Checkerboard",
    "DataSet",
    "ring8",
    "grid25",
    "checkerboard",
    "load_npy",
    "make_target",
    "TARGETS",
    "SIGMA_FLOOR",
]

SIGMA_FLOOR = 1e-6
"""Smallest sigma used by targets without a density at sigma = 0 (BoxUnion, DataSet)."""

_LOG_2PI = math.log(2.0 * math.pi)
_LN2 = math.log(2.0)
_LOG_HALF = -_LN2
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_LOG_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)  # log(phi(x) / Phi(x)) = this - log erfcx(-x/sqrt2)
_EXP_FLOOR = -80.0  # exp(x - max) is floored at e^-80 (see module docstring)
_DEFAULT_MAX_ELEMENTS = 2**24  # hard cap on (components x points) entries evaluated at once
_BLOCK_ELEMENTS = 2**17  # preferred (components x points) block size (cache-sized)
_DIRECT_DIM_LIMIT = 8  # up to this dimension, squared distances are formed per coordinate (most accurate)
_DIRECT_K_LIMIT = 64  # up to this many components, the score is summed from m_k - y directly


# --------------------------------------------------------------------------------------------
# helpers


def _as_f64(value: Any, what: str) -> Tensor:
    """A float64 CPU tensor from a number, (nested) list, numpy array or tensor; ConfigError if not."""
    if isinstance(value, Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        if isinstance(value, (str, bytes)) or value is None:
            raise ConfigError(f"`{what}` must be a number or a list of numbers, not {value!r}; give numbers.")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"`{what}` must be a number or a (nested) list of numbers with a regular shape, "
                f"got {value!r}; give numbers in a rectangular list."
            ) from None
        t = torch.from_numpy(arr.copy())
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"`{what}` contains NaN or infinite values; give finite numbers.")
    return t


def _check_dtype(dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise ConfigError(f"a target's dtype must be a real floating-point torch dtype, not {dtype!r}; use torch.float32 or torch.float64.")
    return dtype


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate for x near 0 and for x very negative."""
    return torch.where(x > -_LN2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _cols(rows: Tensor) -> Tensor:
    """(D, N) -> contiguous (N, D); stack is faster than .T.contiguous() for small D."""
    return torch.stack(rows.unbind(0), dim=1)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


# --------------------------------------------------------------------------------------------
# base class


class Target:
    """A data distribution q on R^dim with exact log q_sigma and grad log q_sigma.

    Subclasses implement ``_evaluate(y, sigma, want_score)`` on a (N, dim) tensor ``y`` and a
    sigma that is a python float or 0-d tensor of y's dtype/device, ``_sample(n, generator,
    dtype, device)``, ``_bounds()`` and keep their master parameters in ``self._master`` (a dict
    of CPU tensors; ``_derive(params)`` may add derived tensors after casting).
    """

    dim: int
    name: str

    def __init__(self, dim: int, name: str, *, dtype: torch.dtype | None = None, device: Any = None):
        self.dim = int(dim)
        self.name = str(name)
        self._dtype = _check_dtype(dtype)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._master: dict[str, Tensor] = {}
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, Tensor]] = {}

    # -- properties ---------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """dtype of samples (evaluation always uses the dtype of its input)."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """device of samples (evaluation always uses the device of its input)."""
        return self._device

    @property
    def gaussian(self) -> tuple[Tensor, Tensor] | None:
        """(mean (D,), cov (D, D)) in the target's dtype/device if q is exactly Gaussian, else None."""
        return None

    # -- evaluation ---------------------------------------------------------------------------

    def log_prob_and_score(self, y: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        """(log q_sigma(y) of shape (...,), grad_y log q_sigma(y) of shape (..., D))."""
        lp, sc = self._call(y, sigma, True)
        return lp, sc  # type: ignore[return-value]

    def log_prob(self, y: Tensor, sigma: float | Tensor) -> Tensor:
        """log q_sigma(y), shape (...,) for y of shape (..., D)."""
        return self._call(y, sigma, False)[0]

    def score(self, y: Tensor, sigma: float | Tensor) -> Tensor:
        """grad_y log q_sigma(y), shape (..., D)."""
        return self._call(y, sigma, True)[1]  # type: ignore[return-value]

    def _call(self, y: Any, sigma: Any, want_score: bool) -> tuple[Tensor, Tensor | None]:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if not y.is_floating_point() or y.is_complex():
            y = y.to(torch.get_default_dtype())
        if y.ndim == 0 or y.shape[-1] != self.dim:
            raise ConfigError(
                f"target '{self.name}' lives in {self.dim} dimensions but got points of shape "
                f"{tuple(y.shape)}; pass an array of shape (N, {self.dim})."
            )
        batch = y.shape[:-1]
        y2 = y.reshape(-1, self.dim)
        s = _sigma_like(sigma, y2)
        lp, sc = self._evaluate(y2, s, want_score)
        lp = lp.reshape(batch)
        if sc is not None:
            sc = sc.reshape(*batch, self.dim)
        return lp, sc

    def _evaluate(self, y: Tensor, sigma: float | Tensor, want_score: bool) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _params(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        key = (dtype, device)
        p = self._cache.get(key)
        if p is None:
            p = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in self._master.items()}
            self._derive(p)
            self._cache[key] = p
        return p

    def _derive(self, p: dict[str, Tensor]) -> None:
        """Hook: add derived tensors to a freshly cast parameter dict."""

    # -- sampling -----------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples of q (sigma = 0), shape (n, dim), in the target's dtype and device.

        Only ``generator`` is used for randomness (the global RNG if it is None), so a generator
        with the same seed gives bit-identical samples. Random numbers are drawn on the
        generator's device and the result is moved to the target's device.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"the number of samples must be a whole number >= 0, got {n!r}; pass e.g. 1000.")
        n = int(n)
        gen_device = generator.device if generator is not None else self._device
        if n == 0:
            return torch.empty(0, self.dim, dtype=self._dtype, device=self._device)
        x = self._sample(n, generator, self._dtype, gen_device)
        return x.to(self._device)

    def _sample(self, n: int, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device) -> Tensor:
        raise NotImplementedError

    # -- misc ---------------------------------------------------------------------------------

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "Target":
        """A copy whose samples (and `gaussian`) use the given device/dtype; parameters are shared."""
        new = copy.copy(self)
        if device is not None:
            new._device = torch.device(device)
        if dtype is not None:
            new._dtype = _check_dtype(dtype)
        return new

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(lo, hi): a box covering the bulk of q in the first min(dim, 2) coordinates, for plots."""
        lo, hi = self._bounds()
        k = min(self.dim, 2)
        return tuple(float(v) for v in lo[:k]), tuple(float(v) for v in hi[:k])

    def _bounds(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def _sigma_like(sigma: Any, y: Tensor) -> float | Tensor:
    """sigma as a python float or a 0-d tensor with y's dtype/device (grad preserved)."""
    if isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ConfigError(f"sigma must be a single number, got a tensor of shape {tuple(sigma.shape)}; pass a scalar.")
        s = sigma.reshape(()).to(dtype=y.dtype, device=y.device)
        if s.device.type == "cpu":
            v = float(s.detach())
            if not (v >= 0.0) or math.isinf(v):
                raise ConfigError(f"the noise level sigma must be finite and >= 0, got {v}; pass a non-negative number.")
        return s
    try:
        v = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(f"the noise level sigma must be a number, got {sigma!r}; pass a non-negative number.") from None
    if not (v >= 0.0) or math.isinf(v):
        raise ConfigError(f"the noise level sigma must be finite and >= 0, got {v}; pass a non-negative number.")
    return v


def _floor_sigma(s: float | Tensor) -> float | Tensor:
    if isinstance(s, Tensor):
        return s.clamp_min(SIGMA_FLOOR)
    return max(s, SIGMA_FLOOR)


def _log(x: float | Tensor) -> float | Tensor:
    return x.log() if isinstance(x, Tensor) else math.log(x)


# --------------------------------------------------------------------------------------------
# Gaussian


class Gaussian(Target):
    """q = N(mean, cov); q_sigma = N(mean, cov + sigma^2 I), score = -(cov + sigma^2 I)^-1 (y - mean).

    ``cov`` is eigendecomposed once (cov = U diag(lam) U^T), so any sigma costs two small matmuls.
    """

    def __init__(self, mean: Any, cov: Any, *, name: str = "gaussian", dtype: torch.dtype | None = None, device: Any = None):
        m = _as_f64(mean, "mean")
        S = _as_f64(cov, "cov")
        if m.ndim != 1 or m.numel() == 0:
            raise ConfigError(f"the Gaussian mean must be a list of D numbers, got shape {tuple(m.shape)}; pass e.g. [0, 0].")
        D = m.numel()
        if S.shape != (D, D):
            raise ConfigError(
                f"the Gaussian cov must be a {D}x{D} matrix to match the mean, got shape {tuple(S.shape)}; "
                f"pass a list of {D} rows of {D} numbers."
            )
        scale = float(S.abs().max())
        if float((S - S.T).abs().max()) > 1e-9 * max(scale, 1e-300):
            raise ConfigError("the Gaussian cov is not symmetric; pass a symmetric matrix (cov[i][j] == cov[j][i]).")
        S = 0.5 * (S + S.T)
        lam, U = torch.linalg.eigh(S)
        if not float(lam.min()) > 1e-12 * max(float(lam.abs().max()), 1e-300):
            raise ConfigError(
                f"the Gaussian cov is not positive definite (smallest eigenvalue {_fmt(float(lam.min()))}); "
                "pass a covariance with all eigenvalues > 0."
            )
        L = torch.linalg.cholesky(S)
        super().__init__(D, name, dtype=dtype, device=device)
        self._master = {"mean": m, "cov": S, "lam": lam, "U": U, "chol": L}

    def _derive(self, p: dict[str, Tensor]) -> None:
        p["UT"] = p["U"].T.contiguous()
        p["cholT"] = p["chol"].T.contiguous()
        p["mean_col"] = p["mean"].unsqueeze(1)

    @property
    def gaussian(self) -> tuple[Tensor, Tensor]:
        p = self._params(self._dtype, self._device)
        return p["mean"].clone(), p["cov"].clone()

    def _evaluate(self, y: Tensor, sigma: float | Tensor, want_score: bool) -> tuple[Tensor, Tensor | None]:
        # (D, N) layout: reductions and broadcasts over the few coordinates are much faster
        p = self._params(y.dtype, y.device)
        v = p["lam"] + sigma * sigma  # eigenvalues of cov + sigma^2 I
        z = p["UT"] @ (y.T - p["mean_col"])  # (D, N) coordinates in the eigenbasis
        zv = z * v.reciprocal().unsqueeze(1)
        lp = (z * zv).sum(0) + (v.log().sum() + self.dim * _LOG_2PI)
        lp = lp * -0.5
        sc = _cols(p["U"] @ zv).neg_() if want_score else None
        return lp, sc

    def _sample(self, n, generator, dtype, device):
        p = self._params(dtype, device)
        eps = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        return torch.addmm(p["mean"], eps, p["cholT"])

    def _bounds(self):
        m = self._master["mean"]
        sd = self._master["cov"].diagonal().sqrt()
        return m - 4 * sd, m + 4 * sd


# --------------------------------------------------------------------------------------------
# isotropic Gaussian mixtures (also the engine of DataSet)


def _mixture_block(
    y: Tensor,
    means: Tensor,
    const: Tensor,
    neg_half_inv_v: Tensor | float,
    inv_v: Tensor | float,
    want_score: bool,
    inplace: bool,
) -> tuple[Tensor, Tensor | None]:
    """log sum_k exp(const_k - |y - m_k|^2 / (2 v_k)) and sum_k r_k (m_k - y) / v_k for one block.

    Works in (components, points) layout so the reductions over the few components are
    vectorised over points. ``const``, ``neg_half_inv_v`` = -1/(2 v), ``inv_v`` = 1/v are (K, 1)
    columns or scalars. ``inplace`` allows in-place updates of temporaries (no autograd).

    For few components (K <= _DIRECT_K_LIMIT) and low dimension the score is summed from the
    coordinate differences m_k - y directly (most accurate); otherwise it is X^T r - y (sum r)
    via a matrix product, whose rounding error is that of the data coordinates themselves.
    """
    N, D = y.shape
    K = means.shape[0]
    yT = y.T
    direct = D <= _DIRECT_DIM_LIMIT
    keep = direct and want_score and K <= _DIRECT_K_LIMIT
    diffs: list[Tensor] = []
    if direct:
        d2 = None
        for d in range(D):
            t = means[:, d : d + 1] - yT[d]  # (K, N): m_k - y
            if keep:
                diffs.append(t)
            if d2 is None:
                d2 = t.square_() if (inplace and not keep) else t.square()
            elif inplace:
                d2.addcmul_(t, t)
            else:
                d2 = torch.addcmul(d2, t, t)
    else:
        d2 = torch.cdist(means, y, compute_mode="donot_use_mm_for_euclid_dist").square()
    if inplace:
        logits = d2.mul_(neg_half_inv_v).add_(const)
    else:
        logits = torch.addcmul(const, neg_half_inv_v, d2) if isinstance(neg_half_inv_v, Tensor) else const + neg_half_inv_v * d2
    mx = logits.amax(0).detach()
    if inplace:
        e = logits.sub_(mx).clamp_min_(_EXP_FLOOR).exp_()
    else:
        e = (logits - mx).clamp_min(_EXP_FLOOR).exp()
    ssum = e.sum(0)
    lp = mx + ssum.log()
    if not want_score:
        return lp, None
    scalar_v = not isinstance(inv_v, Tensor) or inv_v.numel() == 1
    f = ssum.reciprocal()  # (N,): 1 / sum_k e_k, times 1/v when all variances agree
    if scalar_v:
        f = f * (inv_v if not isinstance(inv_v, Tensor) else inv_v.reshape(()))
    else:
        e = e.mul_(inv_v) if inplace else e * inv_v  # r_k / v_k up to the 1/ssum factor
    if keep:
        if inplace:
            sc = torch.stack([t.mul_(e).sum(0).mul_(f) for t in diffs], dim=1)
        else:
            sc = torch.stack([(e * t).sum(0) * f for t in diffs], dim=1)
    else:
        mT = (means.T @ e) * f  # (D, N): sum_k r_k m_k / v_k
        if scalar_v:
            sc = _cols(mT) - y * (inv_v if not isinstance(inv_v, Tensor) else inv_v.reshape(()))
        else:
            sc = _cols(mT) - y * (e.sum(0) * f).unsqueeze(1)
    return lp, sc


def _block_rows(N: int, K: int, max_elements: int) -> int:
    """Rows per block: about _BLOCK_ELEMENTS (K x rows) entries, so temporaries stay in cache
    and the allocator reuses memory instead of faulting in fresh pages; at least 64 rows unless
    that would exceed max_elements; blocks of equal size."""
    K = max(K, 1)
    rows = max(1, min(max(64, _BLOCK_ELEMENTS // K), int(max_elements) // K))
    if rows >= N:
        return N
    nblocks = -(-N // rows)
    return -(-N // nblocks)


def _in_blocks(
    fn: Callable[[Tensor, bool], tuple[Tensor, Tensor | None]],
    y: Tensor,
    rows: int,
    want_score: bool,
    inplace: bool,
) -> tuple[Tensor, Tensor | None]:
    """Apply fn(y_block, inplace) -> (lp, score) to blocks of `rows` points and join the results."""
    N = y.shape[0]
    if N <= rows:
        return fn(y, inplace)
    if inplace:  # no autograd: write into preallocated outputs
        lp_out = torch.empty(N, dtype=y.dtype, device=y.device)
        sc_out = torch.empty(N, y.shape[1], dtype=y.dtype, device=y.device) if want_score else None
        for i in range(0, N, rows):
            lp, sc = fn(y[i : i + rows], inplace)
            lp_out[i : i + rows] = lp
            if sc_out is not None:
                sc_out[i : i + rows] = sc
        return lp_out, sc_out
    parts = [fn(y[i : i + rows], inplace) for i in range(0, N, rows)]
    lp = torch.cat([p[0] for p in parts])
    return lp, (torch.cat([p[1] for p in parts]) if want_score else None)  # type: ignore[misc]


def _no_grad_needed(*values: Any) -> bool:
    """True when no autograd graph is being recorded through any of the tensors."""
    return not (torch.is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad for v in values))


def _mixture_eval(
    y: Tensor,
    means: Tensor,
    const: Tensor,
    neg_half_inv_v: Tensor | float,
    inv_v: Tensor | float,
    want_score: bool,
    max_elements: int,
) -> tuple[Tensor, Tensor | None]:
    """_mixture_block over blocks of points (see _block_rows)."""
    inplace = _no_grad_needed(y, means, const, neg_half_inv_v, inv_v)
    rows = _block_rows(y.shape[0], means.shape[0], max_elements)
    return _in_blocks(
        lambda yb, ip: _mixture_block(yb, means, const, neg_half_inv_v, inv_v, want_score, ip), y, rows, want_score, inplace
    )


class GaussianMixture(Target):
    """q = sum_k w_k N(m_k, s_k^2 I); q_sigma has component variances s_k^2 + sigma^2.

    score = sum_k r_k(y) (m_k - y) / (s_k^2 + sigma^2), responsibilities r by a max-shifted
    softmax in log space, so tiny stds/sigmas and far-away points stay finite.
    """

    def __init__(
        self,
        means: Any,
        stds: Any,
        weights: Any = None,
        *,
        name: str = "gmm",
        dtype: torch.dtype | None = None,
        device: Any = None,
        max_elements: int = _DEFAULT_MAX_ELEMENTS,
    ):
        M = _as_f64(means, "means")
        if M.ndim != 2 or M.shape[0] == 0 or M.shape[1] == 0:
            raise ConfigError(
                f"mixture `means` must be a list of K points of D numbers each, got shape {tuple(M.shape)}; "
                "pass e.g. [[0, 0], [3, 3]]."
            )
        K, D = M.shape
        s = _as_f64(stds, "stds")
        if s.ndim == 0:
            s = s.expand(K).clone()
        if s.shape != (K,):
            raise ConfigError(f"mixture `stds` must be one number or a list of {K} numbers (one per component), got shape {tuple(s.shape)}; fix its length.")
        if not bool((s > 0).all()):
            raise ConfigError("mixture `stds` must all be > 0; replace zero or negative standard deviations.")
        if weights is None:
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            w = _as_f64(weights, "weights")
            if w.shape != (K,):
                raise ConfigError(f"mixture `weights` must be a list of {K} numbers (one per component), got shape {tuple(w.shape)}; fix its length.")
            if not bool((w > 0).all()):
                raise ConfigError("mixture `weights` must all be > 0; drop components with zero weight.")
            w = w / w.sum()
        super().__init__(D, name, dtype=dtype, device=device)
        self.max_elements = int(max_elements)
        self._master = {"means": M, "stds": s, "weights": w, "s2": s * s, "logw": w.log()}

    @property
    def num_components(self) -> int:
        return int(self._master["means"].shape[0])

    @property
    def gaussian(self) -> tuple[Tensor, Tensor] | None:
        if self.num_components != 1:
            return None
        p = self._params(self._dtype, self._device)
        cov = torch.eye(self.dim, dtype=self._dtype, device=self._device) * p["s2"][0]
        return p["means"][0].clone(), cov

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """(means (K, D), stds (K,), weights (K,)), float64 copies on the CPU."""
        return tuple(self._master[k].clone() for k in ("means", "stds", "weights"))

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact (mean (D,), cov (D, D)) of q, float64 on the CPU."""
        M, w, s2 = self._master["means"], self._master["weights"], self._master["s2"]
        mean = w @ M
        c = M - mean
        cov = (c.T * w) @ c + torch.eye(self.dim, dtype=torch.float64) * (w @ s2)
        return mean, cov

    def _derive(self, p):
        p["iso"] = bool((self._master["s2"] == self._master["s2"][0]).all())  # one common variance
        p["s2_0"] = p["s2"][0]

    def _evaluate(self, y, sigma, want_score):
        p = self._params(y.dtype, y.device)
        s2 = sigma * sigma
        if p["iso"]:
            v = p["s2_0"] + s2  # 0-d
            const = (p["logw"] - 0.5 * self.dim * (v.log() + _LOG_2PI)).unsqueeze(1)
            inv_v = v.reciprocal()
            return _mixture_eval(y, p["means"], const, -0.5 * inv_v, inv_v, want_score, self.max_elements)
        v = p["s2"] + s2  # (K,)
        inv_v = v.reciprocal()
        const = p["logw"] - 0.5 * self.dim * (v.log() + _LOG_2PI)
        return _mixture_eval(
            y, p["means"], const.unsqueeze(1), (-0.5 * inv_v).unsqueeze(1), inv_v.unsqueeze(1), want_score, self.max_elements
        )

    def _sample(self, n, generator, dtype, device):
        w = self._master["weights"].to(device)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        p = self._params(dtype, device)
        eps = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        return torch.addcmul(p["means"][k], p["stds"][k].unsqueeze(1), eps)

    def _bounds(self):
        M, s = self._master["means"], self._master["stds"].unsqueeze(1)
        return (M - 4 * s).amin(0), (M + 4 * s).amax(0)


def ring8(radius: float = 4.0, std: float = 0.15) -> GaussianMixture:
    """8 equal-weight components with means at `radius` and angles 2*pi*k/8, std 0.15."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = float(radius) * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return GaussianMixture(means, float(std), name="ring8")


def grid25(spacing: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """25 equal-weight components on {-2,-1,0,1,2}^2 * spacing (default {-4,-2,0,2,4}^2), std 0.1."""
    c = torch.arange(-2, 3, dtype=torch.float64) * float(spacing)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return GaussianMixture(means, float(std), name="grid25")


# --------------------------------------------------------------------------------------------
# unions of boxes (uniform densities)


class BoxUnion(Target):
    """q = sum_k w_k Uniform(box_k), box_k = prod_d [a_kd, b_kd].

    q_sigma(y) = sum_k (w_k / vol_k) prod_d [Phi((b_kd - y_d)/sigma) - Phi((a_kd - y_d)/sigma)].

    Each factor is computed in log space: with alpha = (a - y)/sigma, beta = (b - y)/sigma the
    pair is mirrored to (lo, hi) = (-beta, -alpha) when alpha > 0 (Phi(b) - Phi(a) =
    Phi(-a) - Phi(-b)), so that always lo <= 0. Then

        log Z = log Phi(hi) + log(1 - exp(delta)),   delta = log Phi(lo) - log Phi(hi),

    with log Phi and log phi/Phi written through log erfcx(|t|/sqrt 2) (no x^2/2 - x^2/2
    cancellations, so far-away points keep full relative accuracy even in float32), and
    delta = (hi - lo)(hi + lo)/2 + log erfcx(-lo/sqrt2) - log erfcx(-hi/sqrt2) when hi < 0, where
    hi - lo = width/sigma exactly. The score factor d/dy log Z = ±(phi(lo) - phi(hi)) / (sigma Z)
    is exp(log phi(end) - log Z) times expm1(-|hi^2 - lo^2|/2), taking the end with the larger
    phi, so it has neither cancellation (large sigma) nor overflow (far points); the boxes are
    combined with softmax weights.

    sigma is clamped to at least SIGMA_FLOOR = 1e-6 (q itself has no smooth density).
    Special functions are evaluated once per distinct box edge per coordinate.
    """

    def __init__(
        self,
        boxes: Any,
        weights: Any = None,
        *,
        name: str = "boxes",
        dtype: torch.dtype | None = None,
        device: Any = None,
    ):
        B = _as_f64(boxes, "boxes")
        if B.ndim != 3 or B.shape[2] != 2 or B.shape[0] == 0 or B.shape[1] == 0:
            raise ConfigError(
                f"`boxes` must have shape (K, D, 2) (for each box and coordinate a [low, high] pair), got {tuple(B.shape)}; "
                "pass e.g. [[[0, 1], [0, 1]]]."
            )
        K, D, _ = B.shape
        a, b = B[..., 0].contiguous(), B[..., 1].contiguous()
        if not bool((b > a).all()):
            raise ConfigError("every box needs low < high in each coordinate; swap or fix the empty intervals.")
        if weights is None:
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            w = _as_f64(weights, "weights")
            if w.shape != (K,):
                raise ConfigError(f"box `weights` must be a list of {K} numbers (one per box), got shape {tuple(w.shape)}; fix its length.")
            if not bool((w > 0).all()):
                raise ConfigError("box `weights` must all be > 0; drop boxes with zero weight.")
            w = w / w.sum()
        super().__init__(D, name, dtype=dtype, device=device)
        width = b - a
        master = {"a": a, "b": b, "width": width, "weights": w, "logc": w.log() - width.log().sum(1)}
        # per coordinate: distinct edges (V), distinct intervals (U) as edge indices, box -> interval
        for d in range(D):
            iv, inv = torch.unique(torch.stack([a[:, d], b[:, d]], dim=1), dim=0, return_inverse=True)
            edges, eidx = torch.unique(iv.reshape(-1), return_inverse=True)
            eidx = eidx.reshape(-1, 2)
            master[f"edges{d}"] = edges.unsqueeze(1)  # (V, 1)
            master[f"ia{d}"] = eidx[:, 0].contiguous()  # (U,) start edge of each interval
            master[f"ib{d}"] = eidx[:, 1].contiguous()  # (U,) end edge
            master[f"width{d}"] = (iv[:, 1] - iv[:, 0]).unsqueeze(1)  # (U, 1)
            master[f"box{d}"] = inv.reshape(K)
        self._master = master

    def _derive(self, p):
        p["logc_col"] = p["logc"].unsqueeze(1)

    @staticmethod
    def _interval(
        t_a: Tensor, t_b: Tensor, E_a: Tensor, E_b: Tensor, wdt: Tensor, want_score: bool
    ) -> tuple[Tensor, Tensor | None]:
        """log(Phi(t_b) - Phi(t_a)) and (phi(t_a) - phi(t_b)) / (Phi(t_b) - Phi(t_a)), t_a < t_b.

        E_* = log erfcx(|t_*| / sqrt 2); wdt = t_b - t_a (exact, from the interval width).
        See the class docstring.
        """
        swap = t_a > 0  # both ends in the upper tail: mirror, Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
        lo = torch.where(swap, -t_b, t_a)  # lo <= 0
        hi = torch.where(swap, -t_a, t_b)
        E_lo = torch.where(swap, E_b, E_a)  # log erfcx(|lo|/sqrt2)
        E_hi = torch.where(swap, E_a, E_b)  # log erfcx(|hi|/sqrt2)
        lo2 = lo * lo
        hi2 = hi * hi
        hi_neg = hi < 0
        ln_lo = (_LOG_HALF + E_lo) - 0.5 * lo2  # log Phi(lo)
        # log Phi(hi): lower tail via erfcx, upper tail as log1p(-Phi(-hi))
        ln_hi = torch.where(
            hi_neg,
            (_LOG_HALF + E_hi) - 0.5 * hi2,
            torch.log1p((E_hi - 0.5 * hi2).clamp_min(_EXP_FLOOR).exp() * -0.5),
        )
        c = 0.5 * wdt * (hi + lo)  # (hi^2 - lo^2) / 2 without cancellation
        # delta = log Phi(lo) - log Phi(hi); for hi < 0 without the lo^2/2 - hi^2/2 cancellation
        delta = torch.where(hi_neg, c + (E_lo - E_hi), ln_lo - ln_hi)
        L1 = _log1mexp(delta)
        logZ = ln_hi + L1
        if not want_score:
            return logZ, None
        # phi(lo) - phi(hi) = phi(hi) expm1(c) = -phi(lo) expm1(-c), c = (hi^2 - lo^2)/2 = wdt (hi + lo)/2;
        # use the end with the larger phi so there is neither cancellation nor overflow.
        c_neg = c <= 0
        # log(phi/Phi) at that end (phi(x)/Phi(x) = sqrt(2/pi)/erfcx(-x/sqrt2) for x < 0), minus log Z
        m_end = torch.where(
            c_neg,
            torch.where(hi_neg, _LOG_SQRT_2_OVER_PI - E_hi, -0.5 * hi2 - 0.5 * _LOG_2PI - ln_hi) - L1,
            (_LOG_SQRT_2_OVER_PI - E_lo) + delta - L1,
        )
        t_end = m_end.clamp_min(_EXP_FLOOR).exp()  # phi(end) / Z
        g = t_end * torch.expm1(-c.abs())  # (phi(lo) - phi(hi)) / Z up to the sign below
        # sign: -1 where c > 0 (the -phi(lo) form), and -1 again where the pair was mirrored
        flip = torch.logical_xor(c_neg, swap)
        return logZ, torch.where(flip, g, -g)

    def _evaluate(self, y, sigma, want_score):
        p = self._params(y.dtype, y.device)
        s = _floor_sigma(sigma)
        K = p["logc"].shape[0]
        rows = _block_rows(y.shape[0], 4 * K, _DEFAULT_MAX_ELEMENTS)
        return _in_blocks(lambda yb, ip: self._block(yb, p, s, want_score), y, rows, want_score, _no_grad_needed(y, s))

    def _block(self, y, p, s, want_score):
        inv_s = 1.0 / s
        yT = y.T
        logits = p["logc_col"]  # (K, 1) -> (K, N)
        gs: list[Tensor] = []
        for d in range(self.dim):
            t = (p[f"edges{d}"] - yT[d]) * inv_s  # (V, N) standardised edge positions
            E = torch.special.erfcx(t.abs() * _INV_SQRT2).log()  # special functions once per edge
            ia, ib = p[f"ia{d}"], p[f"ib{d}"]
            logZ, g = self._interval(
                t.index_select(0, ia), t.index_select(0, ib), E.index_select(0, ia), E.index_select(0, ib),
                p[f"width{d}"] * inv_s, want_score,
            )
            box = p[f"box{d}"]
            logits = logits + logZ.index_select(0, box)
            if g is not None:
                gs.append(g.index_select(0, box))
        mx = logits.amax(0).detach()
        e = (logits - mx).clamp_min(_EXP_FLOOR).exp()
        ssum = e.sum(0)
        lp = mx + ssum.log()
        if not want_score:
            return lp, None
        f = inv_s / ssum  # softmax normaliser and the 1/sigma of d/dy
        sc = torch.stack([(e * g).sum(0) * f for g in gs], dim=1)
        return lp, sc

    def _sample(self, n, generator, dtype, device):
        w = self._master["weights"].to(device)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        p = self._params(dtype, device)
        u = torch.rand(n, self.dim, generator=generator, dtype=dtype, device=device)
        return torch.addcmul(p["a"][k], p["width"][k], u)

    def _bounds(self):
        lo, hi = self._master["a"].amin(0), self._master["b"].amax(0)
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad


class Checkerboard(BoxUnion):
    """Uniform on the 8 cells (i, j), i + j even, of the 4x4 board of side-2 cells on [-4, 4]^2.

    Cell (i, j) is [-4 + 2i, -2 + 2i] x [-4 + 2j, -2 + 2j] (cell (0, 0) is the lower-left
    corner); the density is 1/32 on those cells. sigma is clamped to >= 1e-6 (see BoxUnion).
    """

    def __init__(self, *, dtype: torch.dtype | None = None, device: Any = None):
        boxes = [
            [[-4.0 + 2 * i, -2.0 + 2 * i], [-4.0 + 2 * j, -2.0 + 2 * j]]
            for i in range(4)
            for j in range(4)
            if (i + j) % 2 == 0
        ]
        super().__init__(boxes, name="checkerboard", dtype=dtype, device=device)


def checkerboard() -> Checkerboard:
    """The standard 2-D checkerboard target (see Checkerboard)."""
    return Checkerboard()


# --------------------------------------------------------------------------------------------
# finite data sets


class DataSet(Target):
    """q = (1/M) sum_m delta(x_m); q_sigma = (1/M) sum_m N(x_m, sigma^2 I).

    Its score is the exact "ideal denoiser" score (E[x | y] - y) / sigma^2. sigma is clamped to at
    least SIGMA_FLOOR = 1e-6 (q itself is a set of atoms). Queries are processed in chunks so no
    (points x data) array has more than ``max_elements`` (default 2^24) entries; blocks are
    normally much smaller (about 2^17 entries, at least 64 query rows) to stay in cache.
    """

    def __init__(
        self,
        points: Any,
        *,
        name: str | None = None,
        source: str | None = None,
        max_elements: int = _DEFAULT_MAX_ELEMENTS,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ):
        where = f"the data file '{source}'" if source else "the data set"
        X = _data_tensor(points, where)
        super().__init__(X.shape[1], name or (Path(source).stem if source else "data"), dtype=dtype, device=device)
        self.source = source
        self.max_elements = int(max_elements)
        self._master = {"points": X}

    @property
    def num_points(self) -> int:
        return int(self._master["points"].shape[0])

    @property
    def points(self) -> Tensor:
        """The data points (M, D) in the target's dtype/device."""
        return self._params(self._dtype, self._device)["points"]

    def _evaluate(self, y, sigma, want_score):
        p = self._params(y.dtype, y.device)
        s = _floor_sigma(sigma)
        var = s * s
        inv_v = 1.0 / var
        const = -math.log(self.num_points) - 0.5 * self.dim * (_log(var) + _LOG_2PI)
        if not isinstance(const, Tensor):
            const = torch.tensor(const, dtype=y.dtype, device=y.device)
        return _mixture_eval(y, p["points"], const, -0.5 * inv_v, inv_v, want_score, self.max_elements)

    def _sample(self, n, generator, dtype, device):
        p = self._params(dtype, device)
        idx = torch.randint(self.num_points, (n,), generator=generator, device=device)
        return p["points"][idx]

    def _bounds(self):
        X = self._master["points"].numpy()
        lo = np.quantile(X, 0.001, axis=0)
        hi = np.quantile(X, 0.999, axis=0)
        # a constant coordinate (even far from 0) still gets a window that float64 can tell apart
        pad = np.maximum(0.1 * (hi - lo), 1e-6 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi))))
        return torch.from_numpy(lo - pad), torch.from_numpy(hi + pad)


def _data_tensor(points: Any, where: str) -> Tensor:
    """Validate a data array: numeric, 2-D, finite, at least 2 points. Returns a float CPU tensor."""
    if isinstance(points, Tensor):
        arr = points.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(points)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where} could not be read as an array ({exc}); save a plain numeric array.") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{where} holds values of type {arr.dtype}, not numbers; save a plain float array "
            "(e.g. numpy.save(path, x.astype('float32')))."
        )
    if arr.ndim != 2:
        raise DataError(
            f"{where} has shape {arr.shape}, but a data set must be a 2-D array of shape (points, dimensions); "
            "reshape it (e.g. x.reshape(-1, 1) for 1-D data) and save it again."
        )
    if arr.shape[1] == 0:
        raise DataError(f"{where} has shape {arr.shape}, with zero dimensions per point; save an array of shape (points, dimensions).")
    if arr.shape[0] < 2:
        raise DataError(f"{where} has {arr.shape[0]} point(s), but at least 2 are needed; add more data points.")
    if arr.dtype.kind != "f" or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float64)
    if not arr.dtype.isnative:  # a big-endian file on a little-endian machine, say: the same numbers
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        rows = int((~finite).any(axis=1).sum())
        raise DataError(
            f"{where} contains {n_nan} NaN and {n_inf} infinite values (in {rows} of {arr.shape[0]} points); "
            "remove or fix those rows and save the data again."
        )
    return torch.from_numpy(arr.copy())


def load_npy(path: str | Path, *, name: str | None = None, **kwargs: Any) -> DataSet:
    """Load a data set from a .npy file holding a numeric (points, dimensions) array.

    Uses numpy.load(path, allow_pickle=False); every failure becomes a DataError naming the file.
    """
    path = Path(path)
    shown = str(path)
    from dfc.io import check_input_file

    check_input_file(path, "data file")
    try:
        obj = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"the data file '{shown}' does not exist; check the path (relative paths are resolved against the spec's directory).") from None
    except IsADirectoryError:
        raise DataError(f"the data file '{shown}' is a directory, not a .npy file; give the path of the file itself.") from None
    except PermissionError:
        raise DataError(f"the data file '{shown}' cannot be read (permission denied); fix its permissions.") from None
    except ValueError as exc:
        msg = str(exc)
        if "Object arrays" in msg:
            raise DataError(
                f"the data file '{shown}' holds an array of Python objects, which dfc does not load (it would need pickle); "
                "save a plain numeric array, e.g. numpy.save(path, numpy.asarray(x, dtype='float32'))."
            ) from None
        raise DataError(
            f"the data file '{shown}' is not a valid .npy array file ({msg}); save the data with numpy.save(path, x)."
        ) from None
    except Exception as exc:  # corrupt headers, truncated files, ...
        raise DataError(
            f"the data file '{shown}' could not be read as a .npy array ({type(exc).__name__}: {exc}); save the data with numpy.save(path, x)."
        ) from None
    if not isinstance(obj, np.ndarray):
        close = getattr(obj, "close", None)
        if close is not None:
            close()
        raise DataError(
            f"the data file '{shown}' is an .npz archive, not a single array; save one array with numpy.save(path, x)."
        )
    return DataSet(obj, name=name or path.stem, source=shown, **kwargs)


# --------------------------------------------------------------------------------------------
# factory


def gauss16(seed: int = 0) -> Gaussian:
    """The 16-D anisotropic Gaussian of the benchmark suites: N(m, U diag(λ) Uᵀ) with eigenvalues
    spread log-evenly over [0.1, 10], a fixed random rotation U and mean m, both from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    lam = torch.logspace(-1, 1, 16, dtype=torch.float64)
    mean = torch.randn(16, generator=gen, dtype=torch.float64)
    return Gaussian(mean, (q * lam) @ q.T, name="gauss16")


def gmm16(seed: int = 0) -> GaussianMixture:
    """The 16-D 8-component mixture of the benchmark suites: means drawn from N(0, 3² I) (`seed`),
    std 0.5 each, equal weights."""
    gen = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(8, 16, generator=gen, dtype=torch.float64)
    return GaussianMixture(means, 0.5, name="gmm16")


TARGETS: tuple[str, ...] = ("gaussian", "gmm", "ring8", "grid25", "checkerboard", "gauss16", "gmm16")
"""Names make_target knows, besides any path ending in .npy."""

_OPTIONS: dict[str, tuple[str, ...]] = {
    "gaussian": ("mean", "cov", "std", "scale", "dim"),
    "gmm": ("means", "stds", "weights"),
    "ring8": ("radius", "std"),
    "grid25": ("spacing", "std"),
    "checkerboard": (),
    "gauss16": (),
    "gmm16": (),
    ".npy": (),
}


def _number(value: Any, what: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"option `{what}` must be a number, got {value!r}; give e.g. {what}=1.0.")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ConfigError(f"option `{what}` must be a finite number{' > 0' if positive else ''}, got {value!r}; give e.g. {what}=1.0.")
    return v


def _make_gaussian(opts: Mapping[str, Any]) -> Gaussian:
    if "std" in opts and "scale" in opts:
        raise ConfigError("the gaussian target got both `std` and `scale`, which mean the same; give only one.")
    std_key = "std" if "std" in opts else ("scale" if "scale" in opts else None)
    if std_key is not None and "cov" in opts:
        raise ConfigError(f"the gaussian target got both `cov` and `{std_key}`; give either a covariance or a standard deviation.")
    dims: dict[str, int] = {}
    if "dim" in opts:
        dv = opts["dim"]
        if isinstance(dv, bool) or not isinstance(dv, (int, np.integer)) or dv < 1:
            raise ConfigError(f"option `dim` must be a whole number >= 1, got {dv!r}; give e.g. dim=2.")
        dims["dim"] = int(dv)
    mean = _as_f64(opts["mean"], "mean") if "mean" in opts else None
    if mean is not None:
        if mean.ndim > 1:
            raise ConfigError(f"option `mean` must be a number or a list of numbers, got shape {tuple(mean.shape)}; give e.g. mean=[0, 0].")
        if mean.ndim == 1:
            dims["mean"] = mean.numel()
    spread = None
    if "cov" in opts:
        spread = _as_f64(opts["cov"], "cov")
        if spread.ndim == 1:
            dims["cov"] = spread.numel()
        elif spread.ndim == 2:
            dims["cov"] = spread.shape[0]
        elif spread.ndim > 2:
            raise ConfigError(f"option `cov` must be a number, a list (diagonal) or a matrix, got shape {tuple(spread.shape)}; give a D x D matrix.")
    elif std_key is not None:
        spread = _as_f64(opts[std_key], std_key)
        if spread.ndim > 1:
            raise ConfigError(f"option `{std_key}` must be a number or a list of numbers, got shape {tuple(spread.shape)}; give e.g. {std_key}=1.0.")
        if not bool((spread > 0).all()):
            raise ConfigError(f"option `{std_key}` must be > 0; give a positive standard deviation.")
        if spread.ndim == 1:
            dims[std_key] = spread.numel()
        spread = spread * spread  # variances
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{k} -> {v}" for k, v in dims.items())
        raise ConfigError(f"the gaussian target's options disagree on the dimension ({listing}); make them the same length.")
    D = next(iter(dims.values()), 2)
    m = torch.zeros(D, dtype=torch.float64) if mean is None else mean.expand(D).clone()
    if spread is None:
        cov = torch.eye(D, dtype=torch.float64)
    elif spread.ndim == 0:
        cov = torch.eye(D, dtype=torch.float64) * spread
    elif spread.ndim == 1:
        cov = torch.diag(spread)
    else:
        cov = spread
    return Gaussian(m, cov)


def make_target(name: str, options: Mapping[str, Any] | None = None, base_dir: str | Path | None = None) -> Target:
    """The target called `name` (one of TARGETS, or a path ending in .npy) built with `options`.

    * ``gaussian``: mean (list or number), cov (matrix, list = diagonal, or number = c*I) or
      std/scale (number or list); dim (default 2) when nothing else fixes the dimension.
    * ``gmm``: means (K x D), stds (number or K numbers, default 1), weights (K, default equal).
    * ``ring8``: radius (4), std (0.15). ``grid25``: spacing (2), std (0.1). ``checkerboard``.
    * ``gauss16``, ``gmm16``: the 16-D targets of the benchmark suites (fixed seeds).
    * ``*.npy``: a DataSet loaded with load_npy; relative paths are resolved against base_dir.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"the target name must be a non-empty string, got {name!r}; use one of {', '.join(TARGETS)} or a .npy file.")
    opts = dict(options or {})
    raw = name.strip()
    key = ".npy" if raw.lower().endswith(".npy") else raw.lower()
    if key not in _OPTIONS:
        from dfc.spec import did_you_mean

        raise ConfigError(f"unknown target '{raw}'; use one of {', '.join(TARGETS)}, or a path to a .npy data file.",
                          None, did_you_mean(raw, TARGETS))
    allowed = _OPTIONS[key]
    unknown = sorted(k for k in opts if k not in allowed)
    if unknown:
        what = f"'{raw}'" if key != ".npy" else "a .npy data set"
        accepted = f"it accepts {', '.join(allowed)}" if allowed else "it takes no options"
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for target {what}; {accepted}.")
    if key == "gaussian":
        return _make_gaussian(opts)
    if key == "gmm":
        if "means" not in opts:
            raise ConfigError("the gmm target needs `means` (a list of component centres); give e.g. means=[[0, 0], [3, 3]].")
        return GaussianMixture(opts["means"], opts.get("stds", 1.0), opts.get("weights"))
    if key == "ring8":
        return ring8(_number(opts.get("radius", 4.0), "radius"), _number(opts.get("std", 0.15), "std"))
    if key == "grid25":
        return grid25(_number(opts.get("spacing", 2.0), "spacing"), _number(opts.get("std", 0.1), "std"))
    if key == "checkerboard":
        return Checkerboard()
    if key == "gauss16":
        return gauss16()
    if key == "gmm16":
        return gmm16()
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return load_npy(path)
