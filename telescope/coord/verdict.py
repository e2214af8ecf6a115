"""The pre-sweep coord check's verdict of the user's model as plain data (no torch): what
the sweep stores as `result["model_check"]`, and how `sweep`, `status` and `report` say it.

Each layer is judged on the slope of log(mean |activation|) against log(width) after the
check's steps, within bounds of its own. The bounds, and the figures behind them, are in
telescope.coord.model_check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class LayerSlope:
    layer: str
    roles: str  # the roles of the layer's own parameters, e.g. "hidden, vector"
    slope: float  # after the check's steps
    passed: bool
    low: float = -math.inf  # the slope passes within [low, high]
    high: float = math.inf

    def margin(self) -> float:
        """How far inside its bounds the slope is (negative: outside)."""
        return min(self.slope - self.low, self.high - self.slope) if math.isfinite(self.slope) else -math.inf

    def bounds(self) -> str:
        """E.g. `-0.75..+0.25`."""
        return f"{self.low:+.2f}..{self.high:+.2f}"


@dataclass(frozen=True)
class UserModelCheck:
    """The pre-sweep check's verdict: `check` is "coord" or "none" (then nothing ran)."""

    check: str
    passed: bool
    widths: tuple[int, ...] = ()
    steps: int = 0
    lr: float = 0.0
    threshold: float = 0.0
    layers: tuple[LayerSlope, ...] = field(default_factory=tuple)
    seeds: int = 1

    def failing(self) -> list[LayerSlope]:
        return [layer for layer in self.layers if not layer.passed]

    def worst(self) -> LayerSlope | None:
        """The layer nearest its bounds (or furthest outside them)."""
        return min(self.layers, key=LayerSlope.margin, default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UserModelCheck":
        """The stored verdict (keys this version does not know are left out; a verdict stored
        before layers had bounds of their own judged |slope| <= threshold)."""
        known = {f.name for f in fields(LayerSlope)}
        t = d.get("threshold", 0.0)
        layers = tuple(
            LayerSlope(**({"low": -t, "high": t} | {k: v for k, v in layer.items() if k in known}))
            for layer in d.get("layers", ())
        )
        top = {f.name for f in fields(cls)} - {"layers"}
        return cls(**{k: tuple(v) if k == "widths" else v for k, v in d.items() if k in top}, layers=layers)

    def summary(self) -> str:
        """One line: the verdict, its widths and the worst layer."""
        if self.check != "coord":
            return 'coord check of your model: not run ([model] check = "none")'
        line = (
            f"coord check of your model: {'PASS' if self.passed else 'FAIL'} at widths "
            f"{', '.join(map(str, self.widths))} ({self.steps} steps, {self.seeds} seed(s), lr {self.lr:g})"
        )
        worst = self.worst()
        if worst is None:
            return line
        return f"{line}; worst layer {worst.layer}: slope {worst.slope:+.2f} (passes {worst.bounds()})"

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer, for a table."""
        return [
            {
                "layer": v.layer,
                "roles": v.roles,
                "slope": round(v.slope, 3),
                "passes": v.bounds(),
                "verdict": "PASS" if v.passed else "FAIL",
            }
            for v in self.layers
        ]
