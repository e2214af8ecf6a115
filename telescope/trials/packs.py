"""Which trials share a pack: trials with equal pack keys (`Packing.key`), in packs
balanced over the executor's parallel slots."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Hashable, Sequence


def plan_packs(keys: Sequence[Hashable | None], pack_size: int, slots: int) -> list[list[int]]:
    """Indices of `keys` in packs of at most `pack_size` trials with equal keys, spread so
    that each of `slots` workers gets about the same number of trials: a run of n equal
    keys becomes max(slots, ceil(n / pack_size)) packs (no more than n) of sizes that
    differ by at most one. Order within a pack follows the input."""
    runs: dict[Hashable, list[int]] = defaultdict(list)
    singles: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None or pack_size <= 1:
            singles.append([i])
        else:
            runs[key].append(i)
    packs: list[list[int]] = []
    for indices in runs.values():
        count = min(len(indices), max(slots, math.ceil(len(indices) / pack_size)))
        size, extra = divmod(len(indices), count)
        start = 0
        for p in range(count):
            end = start + size + (p < extra)
            packs.append(indices[start:end])
            start = end
    return sorted(packs + singles, key=lambda pack: pack[0])
