"""Small numeric helpers shared by storage, training and the drivers."""

from __future__ import annotations

import math


def finite_or_none(value: float | None) -> float | None:
    """`value` when it is a finite number, else None (how a diverged loss is stored)."""
    return value if value is not None and math.isfinite(value) else None
