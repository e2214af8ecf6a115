"""What a finished sweep found: the typed form of the result stored in its row (as JSON),
shared by the sweep that writes it and by export, report, status and the dashboard."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from telescope.errors import TelescopeError
from telescope.search import AxisDrift
from telescope.storage.database import Database
from telescope.storage.rows import SweepRow


@dataclass(frozen=True)
class LevelResult:
    """One level: its grid's shape, trial counts by outcome, and its best point."""

    level: int
    width: int
    grid: str  # e.g. "5x5"
    trials: int
    diverged: int
    failed: int
    best: dict[str, float]
    best_loss: float | None
    warnings: list[str]


@dataclass(frozen=True)
class SweepResult:
    """The answer at the calibration width, the drift fit over the levels' optima (None with
    one width), every level, and what was checked before the sweep."""

    sweep: str
    parametrization: str
    objective: str
    base_width: int
    calibration_width: int
    target_width: int
    best: dict[str, float]  # the swept hyperparameters' chosen values
    best_loss: float | None
    fixed: dict[str, float]  # the hyperparameters the config fixes
    drift: tuple[AxisDrift, ...] | None
    levels: tuple[LevelResult, ...]
    warnings: list[str]
    transfer_check: dict[str, Any] | None = None  # telescope.transfer_check's report section
    model_check: dict[str, Any] | None = None  # the coord check of the user's model

    def drift_of(self, name: str) -> AxisDrift | None:
        return next((d for d in self.drift or () if d.name == name), None)

    def with_checks(self, checks: Mapping[str, Any]) -> SweepResult:
        return dataclasses.replace(self, **checks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepResult:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        drift = data.get("drift")
        fields["drift"] = None if drift is None else tuple(AxisDrift(**axis) for axis in drift)
        fields["levels"] = tuple(LevelResult(**level) for level in data.get("levels", ()))
        return cls(**fields)


def finished_sweep(db: Database, name: str) -> tuple[SweepRow, SweepResult]:
    """A finished sweep's row and result, or a TelescopeError when it does not exist, is not a
    sweep, or has not finished."""
    row = db.require_sweep(name)
    if row.kind != "sweep":
        raise TelescopeError(f"{name!r} is a {row.kind}, not a sweep")
    if row.status != "completed" or not row.result:
        raise TelescopeError(f"sweep {name!r} has not finished (status {row.status}); run it to the end first")
    return row, SweepResult.from_dict(row.result)
