"""Small numeric helpers shared by storage, training and the drivers."""

from __future__ import annotations

import math


def finite_or_none(value: float | None) -> float | None:
    """`value` as a float when it is a finite number, else None (how a diverged loss is stored)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
