"""CPU threads per trial: parallel (or contended) trials must not oversubscribe the cores.

Tiny proxies gain nothing from many intra-op threads, and on a busy machine torch's
thread pool makes them several times slower, so a trial gets `int(cpus_per_trial)`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


def threads_for(cpus_per_trial: float) -> int:
    return max(1, int(cpus_per_trial))


def limit_threads(threads: int) -> None:
    """For a process that runs only trials (a Ray worker): torch reads the
    variables when it is first imported; if it already is, tell it directly."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """For the caller's own process (the local executor): limit torch while a trial
    runs, then give the caller back its setting. No-op when torch is not loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
