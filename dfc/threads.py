"""One thread policy for every command (`--threads`).

torch's default (one thread per core) pays a synchronisation per operation, which on small tensors
costs more than the arithmetic, and on a machine that is busy with anything else it is far worse:
`dfc train score` ran at 978 samples/s with the default threads beside another job on 2 cores, at
14,474 with one thread. Large particle batches do gain from a second core. So the default follows
the work: one thread while one operation touches fewer than SMALL_WORK numbers, every core torch
would use otherwise. `--threads N` overrides it. Measured in benchmarks/results/threads.md
(`python benchmarks/threads.py`).
"""

from __future__ import annotations

import torch

from dfc.errors import ConfigError

SMALL_WORK = 1 << 17  # numbers touched by one operation below which one thread is faster (measured)
_DEFAULT = torch.get_num_threads()  # torch's own choice, read before dfc changes it


def threads_for(work: int, requested: int | None = None) -> int:
    """The thread count for operations on `work` numbers (e.g. particles × dimension, batch × width)."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads {requested}: use at least one thread.", None,
                              "Leave --threads out to let dfc choose by the size of the work.")
        return int(requested)
    return 1 if work < SMALL_WORK else max(1, _DEFAULT)


def use_threads(work: int, requested: int | None = None) -> int:
    """Set torch's intra-op threads by `threads_for`; returns the count."""
    n = threads_for(work, requested)
    torch.set_num_threads(n)
    return n
