"""Rows handed back to callers: plain frozen dataclasses, detached from SQLAlchemy, and the
mappers from the table models to them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from telescope.spec import FINISHED, SWEEPABLE, Status, TrialResult, TrialSpec
from telescope.storage.schema import LevelModel, SweepModel, TrialModel


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON: equal configs hash equal, whatever the key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class SweepRow:
    name: str
    kind: str
    status: str
    config: dict[str, Any]
    config_hash: str
    parametrization: str
    base_width: int
    calibration_width: int
    target_width: int | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LevelRow:
    sweep: str
    level: int
    width: int
    grid: list[dict[str, Any]]
    status: str
    best_lr: float | None
    best_weight_decay: float | None
    best_muon_lr_ratio: float | None
    best_loss: float | None
    warnings: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def best(self) -> dict[str, float] | None:
        """The best point as {hyperparameter: value}, or None before the level finished."""
        point = {
            name: value
            for name, value in zip(SWEEPABLE, (self.best_lr, self.best_weight_decay, self.best_muon_lr_ratio))
            if value is not None
        }
        return point or None


@dataclass(frozen=True)
class TrialRow:
    sweep: str
    level: int
    key: str
    width: int
    lr: float
    weight_decay: float
    muon_lr_ratio: float
    seed: int
    parametrization: str
    status: Status
    train_loss: float | None
    val_loss: float | None
    tokens: int | None
    flops: float | None
    wall_time: float | None
    steps: int | None
    device: str | None
    error: str | None
    attempts: int
    fingerprint: dict[str, Any] | None
    spec: TrialSpec
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    content_key: str | None = None
    reused_from: str | None = None  # "SWEEP/TRIAL_KEY" whose result this trial took, untrained

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def result(self) -> TrialResult | None:
        """The stored outcome as a TrialResult (non-finite losses read back as None),
        or None while the trial is pending or running."""
        if not self.finished:
            return None
        return TrialResult(
            status=self.status,
            train_loss=self.train_loss,
            val_loss=self.val_loss,
            tokens=self.tokens or 0,
            flops=self.flops or 0.0,
            wall_time=self.wall_time or 0.0,
            steps=self.steps or 0,
            device=self.device or "",
            error=self.error,
            fingerprint=self.fingerprint or {},
        )


@dataclass(frozen=True)
class SweepSummary:
    """One line of `telescope status`: a sweep and its progress."""

    name: str
    kind: str
    status: str
    levels_done: int
    levels_planned: int
    trials_done: int  # completed + diverged + failed
    trials_total: int
    best_loss: float | None  # best loss of the widest finished level
    created_at: datetime


@dataclass(frozen=True)
class SweepDetail:
    """One sweep as `telescope status SWEEP` shows it."""

    sweep: SweepRow
    levels: list[LevelRow]
    trials: list[TrialRow]


def sweep_row(r: SweepModel) -> SweepRow:
    return SweepRow(
        name=r.name,
        kind=r.kind,
        status=r.status,
        config=json.loads(r.config_json),
        config_hash=r.config_hash,
        parametrization=r.parametrization,
        base_width=r.base_width,
        calibration_width=r.calibration_width,
        target_width=r.target_width,
        result=json.loads(r.result_json) if r.result_json is not None else None,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def level_row(r: LevelModel) -> LevelRow:
    return LevelRow(
        sweep=r.sweep,
        level=r.level,
        width=r.width,
        grid=json.loads(r.grid_json),
        status=r.status,
        best_lr=r.best_lr,
        best_weight_decay=r.best_weight_decay,
        best_muon_lr_ratio=r.best_muon_lr_ratio,
        best_loss=r.best_loss,
        warnings=r.warnings.split("\n") if r.warnings else [],
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


def trial_row(r: TrialModel) -> TrialRow:
    return TrialRow(
        sweep=r.sweep,
        level=r.level,
        key=r.trial_key,
        width=r.width,
        lr=r.lr,
        weight_decay=r.weight_decay,
        muon_lr_ratio=r.muon_lr_ratio,
        seed=r.seed,
        parametrization=r.parametrization,
        status=Status(r.status),
        train_loss=r.train_loss,
        val_loss=r.val_loss,
        tokens=r.tokens,
        flops=r.flops,
        wall_time=r.wall_time,
        steps=r.steps,
        device=r.device,
        error=r.error,
        attempts=r.attempts,
        fingerprint=json.loads(r.fingerprint) if r.fingerprint else None,
        spec=TrialSpec.from_dict(json.loads(r.spec_json)),
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        content_key=r.content_key,
        reused_from=r.reused_from,
    )
