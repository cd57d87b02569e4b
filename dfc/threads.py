"""One thread policy for every command (`--threads`).

torch's default (one thread per core) pays a synchronisation per operation, which on dfc's tensors
costs about what the second core gains, and beside any other job it loses badly. Measured on 2 cores
(benchmarks/results/threads.md, `python benchmarks/threads.py`): a second thread gains 0-12% on an
idle machine (`dfc train score` 16,558 → 21,495 samples/s is the best case; `dfc run` at N = 100,000
is 15% slower) and costs 10-75% beside one busy process (`dfc train score` 15,588 → 7,407 samples/s).
So the default is one thread, and every core only for work of SMALL_WORK numbers per operation or
more (particles × dimension for sampling, batch × width for training), beyond what was measured.
`--threads N` overrides it.
"""

from __future__ import annotations

import torch

from dfc.errors import ConfigError

SMALL_WORK = 1 << 22  # work (numbers per operation) from which dfc uses every core; one thread below
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
