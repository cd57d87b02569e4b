"""Peer samplers: k-diffusion's, run on the same targets with the same exact denoiser.

k-diffusion's package `__init__` imports torchvision, scikit-image and wandb, which do not
install beside the CPU torch wheel here, so its `sampling.py` is loaded by file path with a
one-function stand-in for its `utils` (`append_dims`). Install it with
`pip install --no-deps k-diffusion tqdm` (the `[peers]` extra brings tqdm; k-diffusion itself
must come without its dependencies). Without it, the peer rows are skipped with a message.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
import warnings
from functools import lru_cache

import torch

from dfc.errors import ConfigError

SIGMA_MAX, SIGMA_MIN, RHO = 80.0, 0.002, 7.0  # EDM's Karras grid, as the ve_* presets
PEERS = {  # name -> (k-diffusion function, NFE of n steps on a grid ending at σ = 0)
    "euler": ("sample_euler", lambda n: n),
    "euler_ancestral": ("sample_euler_ancestral", lambda n: n),
    "heun": ("sample_heun", lambda n: 2 * n - 1),
    "dpm_2": ("sample_dpm_2", lambda n: 2 * n - 1),
    "dpmpp_2m": ("sample_dpmpp_2m", lambda n: n),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", lambda n: n),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", lambda n: n),
    "dpmpp_sde": ("sample_dpmpp_sde", lambda n: 2 * n - 1),  # two evaluations a step, one on the last (to σ = 0)
    "lms": ("sample_lms", lambda n: n),  # 4th-order linear multistep in σ (scipy-integrated coefficients)
}


@lru_cache(maxsize=1)
def kdiffusion_sampling():
    """k-diffusion's sampling module, or None when k-diffusion is not installed."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("_dfc_kdiffusion")
    pkg.__path__ = [folder]
    utils = types.ModuleType("_dfc_kdiffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules.setdefault("_dfc_kdiffusion", pkg)
    sys.modules.setdefault("_dfc_kdiffusion.utils", utils)
    loader = importlib.util.spec_from_file_location("_dfc_kdiffusion.sampling", f"{folder}/sampling.py")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except ImportError:  # one of its light dependencies (tqdm, torchdiffeq, torchsde, scipy) is missing
        return None
    return module


def steps_for(name: str, nfe: int) -> int:
    """The most steps (sigmas before the final 0) whose NFE stays within the budget (at least one).

    k-diffusion's `get_sigmas_karras(n)` gives n Karras sigmas σ_max … σ_min and a final 0, so
    n steps: Euler-type and multistep samplers spend n evaluations, Heun, DPM-2 and DPM++ SDE 2n − 1
    (their last step, to σ = 0, is an Euler step)."""
    cost = PEERS[name][1]
    n = 1
    while cost(n + 1) <= nfe:
        n += 1
    return n


def run_peer(name: str, target, n: int, nfe_budget: int, seed: int, device: str | None = None
             ) -> tuple[torch.Tensor, dict]:
    """Sample with peer `name` on the Karras grid, exact denoiser D(x; σ) = x + σ² ∇log q_σ(x).

    Returns the samples and their cost: {"nfe": denoiser calls, "wall_s": time in the sampler,
    "steps": grid intervals including the last one to σ = 0}. The initial noise is
    σ_max · N(0, I) from `seed`, as the ve_* presets' prior draws it; the ancestral and SDE
    samplers draw their noise from torch's global generator, seeded with `seed` too.
    """
    kd = kdiffusion_sampling()
    if kd is None:
        raise ConfigError("k-diffusion is not installed, so the peers cannot run.", None,
                          "pip install -e '.[peers]' && pip install --no-deps k-diffusion")
    if name not in PEERS:
        raise ConfigError(f"unknown peer {name!r}.", None, f"Peers: {', '.join(PEERS)}.")
    device = device or str(target.device)
    fn = getattr(kd, PEERS[name][0])
    steps = steps_for(name, nfe_budget)
    sigmas = kd.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, RHO, device=device).to(target.dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((n, target.dim), generator=gen, device=device, dtype=target.dtype) * SIGMA_MAX
    calls = [0]

    def denoiser(x, sigma):
        calls[0] += 1
        s = float(sigma.reshape(-1)[0])
        return x + s * s * target.score(x, s)

    torch.manual_seed(seed)
    with torch.no_grad(), warnings.catch_warnings():
        # its Brownian tree, in float32, warns that σ_min rounds below its own start: harmless
        warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
        start = time.perf_counter()
        out = fn(denoiser, x, sigmas, disable=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    return out, {"nfe": calls[0], "wall_s": wall, "steps": steps}
