"""Readable trial keys and default run names."""

from __future__ import annotations

from typing import Any, Mapping

from telescope.storage.rows import config_hash


def trial_key(prefix: str, point: Mapping[str, float], seed: int) -> str:
    """`PREFIX-lr=0.034-weight_decay=0.1-s0`: stable across runs, so a resumed run plans the
    same keys and skips the finished ones."""
    values = "-".join(f"{name}={value:.6g}" for name, value in point.items())
    return f"{prefix}-{values}-s{seed}"


def default_name(kind: str, parametrization: str, settings: Mapping[str, Any]) -> str:
    """`KIND-TABLE-HASH`: running with the same settings resumes the same run."""
    return f"{kind}-{parametrization}-{config_hash(settings)[:8]}"
