"""A user's model as the drift's fields (MATH §5: a learned score read from a denoiser).

dfc's drift asks a "target-like" object for `score(y, sigma) = ∇log q_σ(y)`. A model in
k-diffusion's denoiser convention, `D(x, sigma) -> E[Y | Y + σε = x]`, gives it through Tweedie
(MATH §9): `∇log q_σ(x) = (D(x; σ) − x)/σ²`. `ModelField` wraps either kind:

    Denoiser(fn)   fn(x, sigma) -> denoised      (a plain callable means a denoiser)
    Score(fn)      fn(x, sigma) -> ∇log q_σ(x)

`sigma` is passed as a tensor of shape (N,), as k-diffusion passes it; `x` has the model's own
per-sample shape (images stay images: dfc's particles are flattened to (N, D) around the call).
`from_diffusers` turns an ε-prediction model on VP-scaled inputs into such a denoiser.
"""

from __future__ import annotations

import copy
import math

import torch

from dfc.errors import ConfigError


class Denoiser:
    """Marks `fn(x, sigma) -> denoised` (k-diffusion's convention) as a denoiser; `dim` when the
    run's target does not fix it; `extra_args` are passed to every call."""

    kind = "denoiser"

    def __init__(self, fn, dim: int | None = None, extra_args: dict | None = None):
        if not callable(fn):
            raise ConfigError(f"{type(self).__name__}(...) needs a callable fn(x, sigma), got a "
                              f"{type(fn).__name__}.", None, "Pass an nn.Module or a function.")
        self.fn, self.dim, self.extra_args = fn, dim, dict(extra_args or {})


class Score(Denoiser):
    """Marks `fn(x, sigma) -> ∇log q_σ(x)` as a score."""

    kind = "score"


def _first_parameter(fn) -> torch.Tensor | None:
    params = getattr(fn, "parameters", None)
    if params is None:
        return None
    try:
        return next(iter(params()))
    except StopIteration:
        buffers = getattr(fn, "buffers", None)
        return next(iter(buffers()), None) if buffers is not None else None


class ModelField:
    """A model as the fields the drift scores: `score(y, sigma)` (y of shape (N, D), sigma a number).

    dtype and device follow the model's parameters (or buffers), else the given defaults. The
    particles are reshaped to `shape` (the model's per-sample shape) around each call. The last
    denoised output of each call is kept in `outputs` while it is a list (k-diffusion callbacks)."""

    name = "model"
    gaussian = None

    def __init__(self, model, dim: int, dtype=torch.float32, device="cpu", shape: tuple | None = None):
        wrapped = model if isinstance(model, Denoiser) else Denoiser(model)
        self.fn, self.kind, self.extra_args = wrapped.fn, wrapped.kind, wrapped.extra_args
        ref = _first_parameter(self.fn)
        # the model is called in its own dtype and device; the particles start there too (`to` moves them)
        self.model_dtype = ref.dtype if ref is not None and ref.is_floating_point() else None
        self.model_device = ref.device if ref is not None else None
        self.dtype = self.model_dtype or dtype
        self.device = self.model_device or torch.device(device)
        self.dim = int(dim)
        self.shape = tuple(shape) if shape is not None else (self.dim,)
        if math.prod(self.shape) != self.dim:
            raise ConfigError(f"the model's sample shape {self.shape} does not hold {self.dim} numbers.")
        self.outputs: list | None = None

    def to(self, device=None, dtype=None) -> "ModelField":
        """A copy whose particles use `device`/`dtype` (the model is still called in its own)."""
        new = copy.copy(self)
        if device is not None:
            new.device = torch.device(device)
        if dtype is not None:
            new.dtype = dtype
        return new

    def _sigma(self, sigma, n: int, like: torch.Tensor) -> torch.Tensor:
        s = float(sigma)
        if not s > 0:
            raise ConfigError(f"the model is asked for the score at σ = {s:g}, where a denoiser gives none "
                              f"((D − x)/σ² is undefined).", None,
                              "End the sampler's path at σ > 0 (the ve_* presets end at 0.002).")
        return torch.full((n,), s, dtype=like.dtype, device=like.device)

    def _call(self, y: torch.Tensor, sigma) -> torch.Tensor:
        """The model's output at particles y (N, D) and σ, in y's layout, dtype and device."""
        n = y.shape[0]
        x = y.to(device=self.model_device or y.device, dtype=self.model_dtype or y.dtype).reshape(n, *self.shape)
        out = self.fn(x, self._sigma(sigma, n, x), **self.extra_args)
        if not torch.is_tensor(out) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if torch.is_tensor(out) else f"a {type(out).__name__}"
            raise ConfigError(f"the model returned {got} for an input of shape {tuple(x.shape)}; a {self.kind} "
                              f"returns a tensor of its input's shape.", None,
                              "Return one value per input coordinate: D(x, sigma) (or the score) with x's shape.")
        return out.reshape(n, -1).to(device=y.device, dtype=y.dtype)

    def denoised(self, y: torch.Tensor, sigma) -> torch.Tensor:
        """D(y; σ) in the particles' layout (N, D); from a score model, y + σ² s (Tweedie, MATH §9)."""
        out = self._call(y, sigma)
        if self.kind == "score":
            out = y + float(sigma) ** 2 * out
        if self.outputs is not None:
            self.outputs.append(out)
        return out

    def score(self, y: torch.Tensor, sigma) -> torch.Tensor:
        """∇log q_σ(y) = (D(y; σ) − y)/σ² (MATH §5, §9); a score model's output as is."""
        if self.kind == "score" and self.outputs is None:
            return self._call(y, sigma)
        return (self.denoised(y, sigma) - y) / float(sigma) ** 2

    def log_prob_and_score(self, y, sigma):
        raise ConfigError("this spec needs log Q_t (its β uses D(x, t), or the closed-form s_p), and a model "
                          "gives only the score.", None,
                          "Sample it with exact fields (model=None), or use a spec whose β does not use D.")

    def __repr__(self) -> str:
        return f"ModelField({self.kind}, dim={self.dim}, dtype={self.dtype}, device={self.device})"


class VPEpsDenoiser(torch.nn.Module):
    """An ε-prediction model on VP-scaled inputs (diffusers' convention) as a denoiser D(x; σ).

    With ᾱ from `alphas_cumprod` (timestep k = 0 … K−1), the VP state is `sqrt(ᾱ) (y + σ ε)` with
    σ = sqrt((1 − ᾱ)/ᾱ), so for a VE state x: the model's input is x/sqrt(1 + σ²), its timestep the
    k at which the table's σ equals σ (linear interpolation in log σ; clamped to the table's ends),
    and D(x; σ) = x − σ ε̂ (Tweedie, MATH §9). The model is called `eps_model(input, timestep)`
    with a float timestep tensor of shape (N,); an output with `.sample` (diffusers) or a tuple is
    unwrapped."""

    def __init__(self, eps_model, alphas_cumprod):
        super().__init__()
        self.eps_model = eps_model
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise ConfigError("alphas_cumprod must hold at least two values strictly between 0 and 1.")
        log_sigmas = 0.5 * torch.log((1 - abar) / abar)
        if not bool((torch.diff(log_sigmas) > 0).all()):
            raise ConfigError("alphas_cumprod must decrease with the timestep (σ = sqrt((1 − ᾱ)/ᾱ) increasing).")
        self.log_sigmas = log_sigmas  # not a buffer: the model's dtype and device are the ε-model's

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional timestep whose table σ is `sigma` (interpolated in log σ)."""
        table = self.log_sigmas.to(sigma.device)
        ls = torch.log(sigma.to(torch.float64)).clamp(float(table[0]), float(table[-1]))
        hi = torch.searchsorted(table, ls).clamp(1, table.numel() - 1)
        lo = hi - 1
        w = (ls - table[lo]) / (table[hi] - table[lo])
        return (lo + w).to(sigma.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        eps = self.eps_model(x / torch.sqrt(1 + s**2), self.timestep(sigma.reshape(-1)), **extra)
        if hasattr(eps, "sample"):
            eps = eps.sample
        elif isinstance(eps, (tuple, list)):
            eps = eps[0]
        return x - s * eps


def from_diffusers(eps_model, alphas_cumprod) -> VPEpsDenoiser:
    """A diffusers-style ε-model (e.g. a UNet with `scheduler.alphas_cumprod`) as a denoiser D(x; σ)."""
    return VPEpsDenoiser(eps_model, alphas_cumprod)
