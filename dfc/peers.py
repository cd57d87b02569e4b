"""Peer samplers: k-diffusion's and diffusers', run on the same targets with the same exact denoiser.

k-diffusion's package `__init__` imports torchvision, scikit-image and wandb, which do not
install beside the CPU torch wheel here, so its `sampling.py` is loaded by file path with a
one-function stand-in for its `utils` (`append_dims`). Install it with
`pip install --no-deps k-diffusion tqdm` (the `[peers]` extra brings tqdm; k-diffusion itself
must come without its dependencies). diffusers' multistep schedulers (UniPC, DPM-Solver++ 3M in
its EDM form, DEIS) are driven by dfc.peers_diffusers; the `[peers]` extra installs diffusers.
A peer whose library is not installed is skipped with a message.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
import warnings
from functools import lru_cache
from typing import Callable, NamedTuple

import torch

from dfc import peers_diffusers
from dfc.errors import ConfigError

SIGMA_MAX, SIGMA_MIN, RHO = 80.0, 0.002, 7.0  # EDM's Karras grid, as the ve_* presets
KDIFFUSION, DIFFUSERS = "k-diffusion", "diffusers"
INSTALL = {  # library -> how to install it (printed as written)
    KDIFFUSION: 'pip install -e ".[peers]" && pip install --no-deps k-diffusion',
    DIFFUSERS: 'pip install -e ".[peers]"',
}


class Peer(NamedTuple):
    fn: str  # k-diffusion's sampling function, or diffusers' scheduler class
    cost: Callable[[int], int]  # NFE of n steps on a grid ending at σ = 0
    library: str = KDIFFUSION


one_per_step = lambda n: n  # noqa: E731
PEERS = {
    "euler": Peer("sample_euler", one_per_step),
    "euler_ancestral": Peer("sample_euler_ancestral", one_per_step),
    "heun": Peer("sample_heun", lambda n: 2 * n - 1),
    "dpm_2": Peer("sample_dpm_2", lambda n: 2 * n - 1),
    "dpmpp_2m": Peer("sample_dpmpp_2m", one_per_step),
    "dpmpp_2m_sde": Peer("sample_dpmpp_2m_sde", one_per_step),
    "dpmpp_3m_sde": Peer("sample_dpmpp_3m_sde", one_per_step),
    "dpmpp_sde": Peer("sample_dpmpp_sde", lambda n: 2 * n - 1),  # two evaluations a step, one on the last (to σ = 0)
    "lms": Peer("sample_lms", one_per_step),  # 4th-order linear multistep in σ (scipy-integrated coefficients)
    # diffusers' multistep schedulers: one evaluation per Karras σ, the last one spent on the step to σ = 0
    **{name: Peer(cls, one_per_step, DIFFUSERS) for name, (cls, _) in peers_diffusers.SCHEDULERS.items()},
}


def library_available(library: str) -> bool:
    """Whether the peers of `library` can run here."""
    if library == KDIFFUSION:
        return kdiffusion_sampling() is not None
    return peers_diffusers.diffusers_module() is not None


def library_version(library: str) -> str:
    """The installed version of `library` (its distribution's metadata), or "" when it has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return ""


def missing_libraries(names) -> dict[str, list[str]]:
    """{library: [its peers among `names`]} for each library of `names` that is not installed."""
    out: dict[str, list[str]] = {}
    for name in names:
        lib = PEERS[name].library
        if not library_available(lib):
            out.setdefault(lib, []).append(name)
    return out


def skip_message(library: str) -> str:
    """One line for the peers of a library that is not installed."""
    return (f"{library} is not installed: its peer rows are skipped. Install it with `{INSTALL[library]}` "
            f"(README, Benchmarks).")


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
    (their last step, to σ = 0, is an Euler step). diffusers' schedulers, set for n steps, take the
    same n Karras sigmas and a final 0 and spend n evaluations (dfc.peers_diffusers)."""
    cost = PEERS[name].cost
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
    if name not in PEERS:
        raise ConfigError(f"unknown peer {name!r}.", None, f"Peers: {', '.join(PEERS)}.")
    peer = PEERS[name]
    if not library_available(peer.library):
        raise ConfigError(f"{peer.library} is not installed, so the peer {name!r} cannot run.", None,
                          INSTALL[peer.library])
    device = device or str(target.device)
    steps = steps_for(name, nfe_budget)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((n, target.dim), generator=gen, device=device, dtype=target.dtype) * SIGMA_MAX
    calls = [0]

    def denoiser(x, sigma):
        calls[0] += 1
        s = float(sigma.reshape(-1)[0]) if torch.is_tensor(sigma) else float(sigma)
        return x + s * s * target.score(x, s)

    if peer.library == DIFFUSERS:  # the scheduler holds its grid: made before the clock starts, as k-diffusion's
        scheduler = peers_diffusers.make_scheduler(name, steps, SIGMA_MIN, SIGMA_MAX, RHO, device)
        sampler = lambda: peers_diffusers.sample(scheduler, denoiser, x)  # noqa: E731
    else:
        kd = kdiffusion_sampling()
        sigmas = kd.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, RHO, device=device).to(target.dtype)
        sampler = lambda: getattr(kd, peer.fn)(denoiser, x, sigmas, disable=True)  # noqa: E731
    torch.manual_seed(seed)
    with torch.no_grad(), warnings.catch_warnings():
        # its Brownian tree, in float32, warns that σ_min rounds below its own start: harmless
        warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
        # DEIS hands 0-d tensors to numpy, which NumPy 2 warns about: not ours to fix
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"diffusers\.")
        start = time.perf_counter()
        out = sampler()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    return out, {"nfe": calls[0], "wall_s": wall, "steps": steps}
