"""diffusers' multistep schedulers as peers, driven by the exact denoiser (dfc.peers runs them).

A diffusers scheduler does not call a model: the caller loops over its timesteps, calls the model
on `scheduler.scale_model_input(x, t)` and hands the output to `scheduler.step`. Here the "model"
is the exact denoiser D(x; σ) = x + σ² ∇log q_σ(x) of the VE marginals q_σ = q * N(0, σ² I),
converted to what each scheduler expects (README, Benchmarks; MATH §9):

- `dpmsolver_3m`: `EDMDPMSolverMultistepScheduler` (DPM-Solver++(3M), Karras grid σ_max → σ_min,
  ρ, then 0). Its samples are VE-scaled; the model sees `c_in(σ) x` and its output `F` becomes
  `c_skip(σ) x + c_out(σ) F` (`precondition_inputs` / `precondition_outputs`, EDM with
  `prediction_type="epsilon"`; `"sample"` is refused there). Both maps are affine, so the wrapper
  reads c_in, c_skip and c_out off the scheduler's own functions and inverts them:
  x = input / c_in, F = (D(x; σ) − c_skip x) / c_out.
- `unipc_3m`, `deis_3m`: `UniPCMultistepScheduler` (UniPC, bh2, predictor and corrector) and
  `DEISMultistepScheduler` (log-ρ DEIS), which have no EDM variant. They are VP schedulers: their
  σ = sqrt((1 − ᾱ)/ᾱ) and their samples are x_vp = x_ve / sqrt(1 + σ²). Their training schedule
  (`trained_betas`) is a geometric σ ladder from σ_min to σ_max, so ᾱ spans the same noise range
  as the other peers, and `use_karras_sigmas=True` puts their steps on the Karras grid (ρ = 7).
  With `prediction_type="sample"` the model returns the data prediction, which is D itself, at
  x_ve = x_vp · sqrt(1 + σ²).

Every peer starts from the same prior draw x_ve = σ_max · z as the other rows, converted to the
scheduler's scale (not `init_noise_sigma`), and ends at σ = 0, where x_vp = x_ve: UniPC and
DPM-Solver with `final_sigmas_type="zero"`; DEIS has no such option (its Karras grid repeats σ_min
and its last step, σ_min → σ_min, does nothing), so its last evaluation, at σ_min, is spent on the
step to σ = 0, D(x; σ_min), as k-diffusion's samplers and DPM-Solver's zero step spend theirs. So
each peer makes one denoiser call per σ of the Karras grid before the final 0: n steps, n NFE.

Schedulers are built from their constructor arguments (never `from_pretrained`): nothing is
downloaded. diffusers comes with the `[peers]` extra; without it these rows are skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from functools import lru_cache

import numpy as np
import torch

ORDER = 3  # diffusers' advice for unconditional sampling ("solver_order=3"); an exact denoiser is unconditional


def _edm(sigma_min: float, sigma_max: float, rho: float) -> dict:
    return {"sigma_min": sigma_min, "sigma_max": sigma_max, "rho": rho, "sigma_schedule": "karras",
            "solver_order": ORDER, "algorithm_type": "dpmsolver++", "prediction_type": "epsilon",
            "final_sigmas_type": "zero"}


def _unipc(sigma_min: float, sigma_max: float, rho: float) -> dict:
    return {**_vp(sigma_min, sigma_max), "solver_type": "bh2", "predict_x0": True, "final_sigmas_type": "zero",
            "sigma_min": sigma_min, "sigma_max": sigma_max}  # UniPC takes the grid's ends as they are


def _deis(sigma_min: float, sigma_max: float, rho: float) -> dict:
    return {**_vp(sigma_min, sigma_max), "algorithm_type": "deis", "solver_type": "logrho"}


def _vp(sigma_min: float, sigma_max: float) -> dict:
    return {"trained_betas": ladder_betas(sigma_min, sigma_max), "solver_order": ORDER, "prediction_type": "sample",
            "use_karras_sigmas": True}  # diffusers' Karras grid has ρ = 7 built in, as RHO


# peer name -> (diffusers scheduler class, its arguments from (σ_min, σ_max, ρ))
SCHEDULERS = {
    "dpmsolver_3m": ("EDMDPMSolverMultistepScheduler", _edm),
    "unipc_3m": ("UniPCMultistepScheduler", _unipc),
    "deis_3m": ("DEISMultistepScheduler", _deis),
}


@lru_cache(maxsize=1)
def diffusers_module():
    """The `diffusers` package, or None when it is not installed or its schedulers do not import."""
    if importlib.util.find_spec("diffusers") is None:
        return None
    try:
        module = importlib.import_module("diffusers")
        for cls_name, _ in SCHEDULERS.values():
            getattr(module, cls_name)  # diffusers imports lazily: a broken dependency shows here
    except (ImportError, RuntimeError, AttributeError):
        return None
    return module


def ladder_betas(sigma_min: float, sigma_max: float, n: int = 1000) -> np.ndarray:
    """A VP training schedule whose σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) runs geometrically from σ_min to σ_max:
    ᾱ_t = 1/(1 + σ_t²), β_t = 1 − ᾱ_t/ᾱ_{t−1}."""
    abar = 1.0 / (1.0 + np.geomspace(sigma_min, sigma_max, n) ** 2)
    return 1.0 - abar / np.concatenate([[1.0], abar[:-1]])


def make_scheduler(name: str, steps: int, sigma_min: float, sigma_max: float, rho: float, device=None, **config):
    """Peer `name`'s scheduler, its timesteps set for `steps` Karras sigmas (then 0). `config`: constructor
    arguments that replace the peer's (e.g. `solver_order=2, lower_order_final=False`, for parity tests)."""
    cls_name, kwargs = SCHEDULERS[name]
    scheduler = getattr(diffusers_module(), cls_name)(**(kwargs(sigma_min, sigma_max, rho) | config))
    scheduler.set_timesteps(steps, device=device)
    scheduler.set_begin_index(0)  # step i is timestep i (Karras timesteps can repeat after rounding)
    return scheduler


def sample(scheduler, denoiser, x: torch.Tensor) -> torch.Tensor:
    """Run a scheduler of `make_scheduler` from the VE prior draw `x` (at σ_max) to σ = 0;
    `denoiser(x, σ)` is D(x; σ) on VE-scaled x with a float σ. Returns VE-scaled (= data-scaled) samples."""
    sigmas = [float(s) for s in scheduler.sigmas]  # the scheduler's own grid (float32)
    edm = hasattr(scheduler, "precondition_outputs")  # the EDM schedulers' samples are VE-scaled
    scale = _edm_scale(scheduler) if edm else _vp_scale
    x = x * scale(sigmas[0])[0]
    last = len(scheduler.timesteps) - 1
    for i, t in enumerate(scheduler.timesteps):
        s = sigmas[i]
        _, c_in, c_skip, c_out = scale(s)
        x_ve = scheduler.scale_model_input(x, t) / c_in
        d = denoiser(x_ve, s)
        if i == last and sigmas[i + 1] > 0:  # DEIS: its last step would stay at σ_min; go to σ = 0 instead
            return d
        x = scheduler.step((d - c_skip * x_ve) / c_out, t, x).prev_sample
    assert sigmas[-1] == 0.0, sigmas[-1]
    return x  # at σ = 0 the VP and VE scalings agree


def _vp_scale(sigma: float) -> tuple[float, float, float, float]:
    """VP: samples and model inputs are x_ve / sqrt(1 + σ²); the model returns D itself."""
    a = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return a, a, 0.0, 1.0


def _edm_scale(scheduler):
    """EDM: samples are x_ve; c_in, c_skip and c_out are read off the scheduler's preconditioning
    (affine in the sample and the model output)."""

    def scale(sigma: float) -> tuple[float, float, float, float]:
        one, zero, s = torch.ones(()), torch.zeros(()), torch.tensor(sigma)
        c_in = float(scheduler.precondition_inputs(one, s))
        c_skip = float(scheduler.precondition_outputs(one, zero, s))
        c_out = float(scheduler.precondition_outputs(zero, one, s))
        return 1.0, c_in, c_skip, c_out

    return scale
