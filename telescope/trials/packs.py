"""Which trials share a pack (see telescope.proxy.packed): trials that differ only in
their swept values and seed, in packs balanced over the executor's parallel slots."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Sequence

from telescope.spec import TrialSpec

PackKey = TrialSpec | None


def pack_key(spec: TrialSpec) -> PackKey:
    """Trials with equal keys can share a pack: everything but LR, weight decay, Muon LR
    ratio and seed is equal. A user's model (a factory or a Hugging Face config) is packed
    when telescope.models.packing finds it batchable; else None: one trial per process."""
    if spec.user_model:
        from telescope.models.packing import batchable

        if not batchable(spec):
            return None
    return dataclasses.replace(spec, lr=1.0, weight_decay=0.0, muon_lr_ratio=1.0, seed=0)


def plan_packs(keys: Sequence[PackKey], pack_size: int, slots: int) -> list[list[int]]:
    """Indices of `keys` in packs of at most `pack_size` trials with equal keys, spread so
    that each of `slots` workers gets about the same number of trials: a run of n equal
    keys becomes max(slots, ceil(n / pack_size)) packs (no more than n) of sizes that
    differ by at most one. Order within a pack follows the input."""
    runs: dict[PackKey, list[int]] = defaultdict(list)
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
