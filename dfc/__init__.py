"""dfc: the DiffFlow spectrum as a language (arXiv 2307.02159).

The Python API (README, "Python"): `dfc.compile(spec, **params_and_run)` returns a `Sampler`
(`.sample`, `.sigmas`, `.prior`, `.torchsde`, `.end_law`); `dfc.Denoiser` / `dfc.Score` say what a model
computes; `dfc.kdiffusion_sampler(sampler)` is a k-diffusion sampling function;
`dfc.from_diffusers(eps_model, alphas_cumprod)` a denoiser from an ε-prediction model;
`dfc.metrics` the sample-quality metrics. Attributes load on first use (importing dfc is cheap).
"""

from __future__ import annotations

import importlib

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("dfc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "compile": "dfc.api", "Sampler": "dfc.api",
    "Denoiser": "dfc.models", "Score": "dfc.models", "from_diffusers": "dfc.models",
    "kdiffusion_sampler": "dfc.interop",
    "DfcError": "dfc.errors", "ConfigError": "dfc.errors",
}
_MODULES = ("metrics", "targets", "errors")

__all__ = sorted(_EXPORTS) + list(_MODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"dfc.{name}")
    raise AttributeError(f"module 'dfc' has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too, for dir(dfc), help(dfc) and completion
    return sorted(set(globals()) | set(__all__))
