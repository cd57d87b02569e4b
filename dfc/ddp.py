"""Data-parallel training under torchrun: `torchrun --nproc_per_node=K -m dfc train score ...`.

torchrun starts K processes with RANK, WORLD_SIZE and LOCAL_RANK in their environment; `start`
reads them and joins the process group (gloo on CPU, nccl on CUDA). Without torchrun the world is
one process and every method below is the identity, so the single-process path is unchanged.

What holds, and why a K-process run equals a one-process run at the same global batch and seed:

- every rank draws the *whole* global batch from the same seeded generator and keeps its slice
  (`shard`), so the union of the ranks' slices at a step is exactly the one-process batch, and
  the generator's state, hence the checkpoint, does not depend on K (`--resume` works across a
  change of K);
- each rank's loss is its slice's sum scaled by K / (global count) (`mean`): DDP averages the
  gradients over the K ranks, which gives the gradient of the global batch's mean, the
  one-process gradient up to the float rounding of the all-reduce;
- rank 0 alone loads the checkpoint (and sends it to the others: no shared filesystem needed),
  writes checkpoints and shows progress; a stop (Ctrl-C) is agreed on by all ranks at a step
  boundary (`any`), so they stop at the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dfc.errors import ConfigError, DfcError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints and shows progress (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's part of a global batch of n: contiguous, the sizes differ by at most one."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def mean(self, values: torch.Tensor, n: int) -> torch.Tensor:
        """The mean over a global batch of n rows, from this rank's rows `values`, in the form DDP
        averages: each rank's share times K, so the average over ranks is the global mean."""
        if self.size == 1:
            return values.mean()
        return values.sum() * (self.size / (n * (values.numel() // max(1, values.shape[0]))))

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """The average of a per-rank value (e.g. a `mean` loss) over the ranks: the global value."""
        if self.size == 1:
            return value
        out = value.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.size

    def any(self, flag: bool) -> bool:
        """Whether any rank says so (for a stop: every rank stops at the same step)."""
        if self.size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self._device())
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module to run forward and backward through: DDP over the ranks, or the module itself."""
        if self.size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)

    def on_main(self, fn):
        """fn() run by rank 0 alone, its result (or its DfcError) given to every rank."""
        if self.size == 1:
            return fn()
        box = [None]
        if self.main:
            try:
                box[0] = ("ok", fn())
            except DfcError as exc:
                box[0] = ("error", exc)
        torch.distributed.broadcast_object_list(box, src=0, device=self._device())
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def device(self, requested: str) -> str:
        """The device of this rank: cuda:LOCAL_RANK for a CUDA run under torchrun, else `requested`."""
        if self.size > 1 and requested.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def _device(self):
        return torch.device(f"cuda:{self.local_rank}") if torch.distributed.get_backend() == "nccl" else None


def from_env(env=None) -> World:
    """The world torchrun describes in the environment (one process without it)."""
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK in the environment are not whole numbers.", None,
                          "Start data-parallel training with torchrun, which sets them.") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"the environment says RANK {rank} of WORLD_SIZE {size}.", None,
                          "Start data-parallel training with torchrun, which sets them.")
    return World(rank, size, local)


def start(device: str = "cpu") -> World:
    """The world, with its process group joined when there is more than one process."""
    world = from_env()
    if world.size > 1 and not torch.distributed.is_initialized():
        if not torch.distributed.is_available():
            raise ConfigError("torchrun started several processes, but this torch has no torch.distributed.", None,
                              "Run one process, or install a torch build with distributed support.")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(world.local_rank)
        torch.distributed.init_process_group(backend)
    return world


def stop() -> None:
    """Leave the process group (if one was joined)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


__all__ = ["World", "from_env", "start", "stop"]
