"""A spectrum point as a k-diffusion sampling function: `dfc.kdiffusion_sampler(sampler)`.

k-diffusion's samplers are `fn(model, x, sigmas, extra_args=None, callback=None, disable=None)`:
x is the initial noise at sigmas[0] (already scaled by it), the model a denoiser D(x, sigma), a
final sigma of 0 the step to the data. The returned function takes the spec's steps on those
sigmas: each σ is mapped to the spec's time t with σ(t) = σ (MATH §9), the state is the spec's
`x = x_kd / u(t)` (Q_t is the law of (Y + σε)/u), and a final 0 is Tweedie's step (MATH §9).
With the σ clock and Euler, `ve_ode` is k-diffusion's `sample_euler` step for step.
"""

from __future__ import annotations

import torch

from dfc.errors import ConfigError


def _as_compiled(sampler):
    from dfc.api import Sampler
    from dfc.compiler import CompiledSpec

    if isinstance(sampler, Sampler):
        return sampler.spec
    if isinstance(sampler, CompiledSpec):
        return sampler
    raise ConfigError(f"kdiffusion_sampler takes a dfc.compile(...) result, not a {type(sampler).__name__}.", None,
                      "Write dfc.kdiffusion_sampler(dfc.compile(\"diffusion_gan\")).")


def _path(spec, sigmas: torch.Tensor):
    """(grid times of the σ's before a final 0, whether the last σ is 0)."""
    from dfc.grids import sigma_to_t

    sig = sigmas.detach().to("cpu", torch.float64).reshape(-1)
    if sig.numel() < 2:
        raise ConfigError(f"sigmas must hold at least two noise levels, got {sig.numel()}.")
    final_zero = bool(sig[-1] == 0)
    path = sig[:-1] if final_zero else sig
    if path.numel() < 2 and not final_zero:
        raise ConfigError("sigmas must hold at least one step.")
    if path.numel() > 1 and not bool((torch.diff(path) < 0).all()):
        raise ConfigError("sigmas must decrease (noise to data), as k-diffusion's samplers take them.")
    return sigma_to_t(spec, path.numpy()), final_zero


def _gan_field(spec, field):
    from dfc.fields import make_estimator

    if spec.run.estimator == "disc":
        raise ConfigError("a discriminator stack is bound to the data it was trained on; a k-diffusion sampler "
                          "has only the model.", spec.run.spans.get("fields"),
                          "Use fields = exact + kde or exact + gauss here, or dfc run with the stack.")
    return make_estimator(spec, field)


def _progress(disable, steps: int):
    """A tqdm bar as k-diffusion shows one (disable=None or False), when tqdm is installed."""
    if disable:
        return None, None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=steps, disable=disable)
    return bar, lambda i: bar.update(1)


def kdiffusion_sampler(sampler, seed: int | None = None):
    """`fn(model, x, sigmas, extra_args=None, callback=None, disable=None)` running the spec's steps.

    The noise of a stochastic spec is drawn from `seed`, or (None) from a seed taken from torch's
    global generator, so `torch.manual_seed` makes it reproducible as it does k-diffusion's samplers.
    `callback` receives k-diffusion's dict (x, i, sigma, sigma_hat, denoised) after each step;
    `disable` switches the tqdm bar off."""
    spec = _as_compiled(sampler)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        from dfc.fields import Drift
        from dfc.models import Denoiser, ModelField
        from dfc.sample import generator_for, integrate

        ts, final_zero = _path(spec, torch.as_tensor(sigmas))
        n, shape = x.shape[0], tuple(x.shape[1:])
        wrapped = model if isinstance(model, Denoiser) else Denoiser(model)
        wrapped = type(wrapped)(wrapped.fn, None, {**wrapped.extra_args, **(extra_args or {})})
        field = ModelField(wrapped, x[0].numel(), x.dtype, x.device, shape).to(x.device, x.dtype)
        drift = Drift(spec, field, _gan_field(spec, field))
        u = [spec.at("u", t) for t in ts]
        x0 = x.reshape(n, -1) / u[0]
        run_seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        gen = generator_for(str(x.device), run_seed)
        record = None
        if callback is not None:
            record = _callback(callback, field, torch.as_tensor(sigmas), u, shape)
        bar, progress = _progress(disable, len(ts) - 1 + int(final_zero))
        try:
            with torch.no_grad():
                y = integrate(drift, x0, ts, gen, run_seed, progress=progress, record=record)
                y = drift.denoise(y, float(ts[-1])) if final_zero else y * u[-1]
                if progress is not None and final_zero:
                    progress(len(ts))
        finally:
            if bar is not None:
                bar.close()
        return y.reshape(n, *shape)

    sample.__name__ = f"sample_{spec.name}"
    sample.__doc__ = f"dfc spec {spec.name!r} ({spec.ir.description}) as a k-diffusion sampler."
    return sample


def _callback(callback, field, sigmas: torch.Tensor, u: list, shape: tuple):
    """record(i, x) for the native sampler -> k-diffusion's callback for step i − 1, with the step's
    first denoised output (the model at x_{i−1}, σ_{i−1}; in the k-diffusion layout)."""
    field.outputs = []
    previous = {}

    def record(i, x):
        if i > 0:
            xi = previous["x"]
            denoised = field.outputs[0] if field.outputs else None
            n = xi.shape[0]
            callback({"x": (xi * u[i - 1]).reshape(n, *shape), "i": i - 1, "sigma": sigmas[i - 1],
                      "sigma_hat": sigmas[i - 1],
                      "denoised": None if denoised is None else denoised.reshape(n, *shape)})
            field.outputs.clear()
        previous["x"] = x

    return record
