"""Telescope's stored runs as Optuna studies: one per sweep level, one per LR line.

Plain data, computed from the telescope database alone; `telescope.dashboard.mirror`
writes it into an Optuna storage. A sweep level becomes `SWEEP · level K · width W`
with a log-uniform distribution per swept hyperparameter over that level's grid. A
transfer check or a batch study runs LR lines (one per width, or per optimizer and
batch size) that may grow by extension levels; each line is one study, `RUN · line K ·
...`, numbered by the level that opened it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from telescope.batch_study.run import KIND as BATCH_STUDY
from telescope.config import parse_config
from telescope.results import SweepResult
from telescope.spec import SWEEPABLE, Status, objective_value
from telescope.storage.database import Database
from telescope.storage.rows import LevelRow, SweepRow, TrialRow
from telescope.transfer_check.settings import KIND as TRANSFER_CHECK

SEPARATOR = " · "
LINE_KINDS = (TRANSFER_CHECK, BATCH_STUDY)


@dataclass(frozen=True)
class TrialPlan:
    """One telescope trial as an Optuna trial."""

    key: str
    level: int
    state: TrialState
    value: float | None  # the objective; set only when COMPLETE
    params: dict[str, float]
    distributions: dict[str, FloatDistribution]
    user_attrs: dict[str, Any]
    started: datetime | None
    finished: datetime | None


@dataclass(frozen=True)
class StudyPlan:
    """One level (or LR line) of one stored run."""

    name: str
    sweep: str
    objective: str  # the metric name shown for the values
    user_attrs: dict[str, Any]
    trials: tuple[TrialPlan, ...]


def run_studies(db: Database, sweep: SweepRow) -> list[StudyPlan]:
    """Every study of one stored run (a sweep, a transfer check or a batch study)."""
    levels = db.levels(sweep.name)
    trials = db.trials(sweep.name)
    if sweep.kind in LINE_KINDS:
        return _line_studies(sweep, levels, trials, _objective(db, sweep))
    return _level_studies(sweep, levels, trials)


def _objective(db: Database, sweep: SweepRow) -> str:
    """The loss a run minimises. A batch study ranks by train loss; a transfer check keeps
    its objective out of its stored settings: it is its sweep's when the sweep ran it
    (`SWEEP-transfer-check`), else the command's only one, val_loss."""
    if sweep.kind == BATCH_STUDY:
        return "train_loss"
    if sweep.kind == TRANSFER_CHECK:
        parent = db.get_sweep(sweep.name.removesuffix(f"-{TRANSFER_CHECK}"))
        if parent is not None and parent.kind == "sweep":
            return str(parent.config.get("objective", "val_loss"))
        return "val_loss"
    return str(sweep.config.get("objective", "val_loss"))


# --------------------------------------------------------------------------- sweeps


def _level_studies(sweep: SweepRow, levels: list[LevelRow], trials: list[TrialRow]) -> list[StudyPlan]:
    config = parse_config(sweep.config)
    swept = config.search.names()
    answer = _sweep_answer(sweep)
    studies = []
    for lv in levels:
        rows = [t for t in trials if t.level == lv.level]
        distributions = _distributions(swept, lv.grid, rows)
        attrs = {
            "level": lv.level,
            "width": lv.width,
            "level_status": lv.status,
            "grid_points": len(lv.grid),
            "level_best": lv.best,
            "level_best_loss": lv.best_loss,
            "warnings": lv.warnings,
            "sweep_answer": answer,
        }
        name = SEPARATOR.join((sweep.name, f"level {lv.level}", f"width {lv.width}"))
        plans = tuple(_trial_plan(t, config.objective, distributions) for t in rows)
        studies.append(StudyPlan(name, sweep.name, config.objective, _present(attrs), plans))
    return studies


def _sweep_answer(sweep: SweepRow) -> dict[str, Any] | None:
    if not sweep.result or "best" not in sweep.result:
        return None
    result = SweepResult.from_dict(sweep.result)
    return _present(
        {
            "best": result.best,
            "best_loss": result.best_loss,
            "calibration_width": result.calibration_width,
            "target_width": result.target_width,
            "at_target_width": {d.name: d.at_target for d in result.drift or ()} or None,
        }
    )


# --------------------------------------------------------------------------- LR lines


_LINE_LABELS: dict[str, Callable[[TrialRow], str]] = {
    TRANSFER_CHECK: lambda t: f"width {t.width}",
    BATCH_STUDY: lambda t: f"{t.parametrization}{SEPARATOR}batch {t.spec.train.batch_size}",
}


def _line_studies(sweep: SweepRow, levels: list[LevelRow], trials: list[TrialRow], objective: str) -> list[StudyPlan]:
    """Trials that differ only in LR and seed form a line; its extension levels join it."""
    label = _LINE_LABELS[sweep.kind]
    lines: dict[str, list[int]] = {}  # label -> its levels, the first one opened it
    by_level = {lv.level: lv for lv in levels}
    for t in trials:
        line = lines.setdefault(label(t), [])
        if t.level not in line:
            line.append(t.level)
    answer = _line_answer(sweep)
    studies = []
    for text, line_levels in sorted(lines.items(), key=lambda item: item[1][0]):
        rows = [t for t in trials if t.level in line_levels]
        grid = [p for level in line_levels if level in by_level for p in by_level[level].grid]
        distributions = _distributions(("lr",), grid, rows)
        last = by_level.get(line_levels[-1])
        attrs = {
            "levels": line_levels,
            "width": rows[0].width,
            "line_best": last.best if last else None,
            "line_best_loss": last.best_loss if last else None,
            "run_answer": answer,
        }
        name = SEPARATOR.join((sweep.name, f"line {line_levels[0]}", text))
        plans = tuple(_trial_plan(t, objective, distributions) for t in rows)
        studies.append(StudyPlan(name, sweep.name, objective, _present(attrs), plans))
    return studies


def _line_answer(sweep: SweepRow) -> dict[str, Any] | None:
    result = sweep.result
    if not result:
        return None
    if sweep.kind == TRANSFER_CHECK:
        return _present({k: result.get(k) for k in ("verdict", "passed", "reasons", "threshold_steps")})
    targets = result.get("targets") or []
    return {"token_optimal_batch": {str(t["loss"]): t.get("token_optimal_batch") for t in targets}} if targets else None


# --------------------------------------------------------------------------- trials


def _distributions(
    names: tuple[str, ...], grid: list[dict[str, Any]], rows: list[TrialRow]
) -> dict[str, FloatDistribution]:
    """A log-uniform distribution per swept hyperparameter spanning the grid (and every
    trial's value, so that each trial lies inside it)."""
    out = {}
    for name in names:
        values = [float(p[name]) for p in grid if name in p] + [float(getattr(t, name)) for t in rows]
        if values:
            out[name] = FloatDistribution(min(values), max(values), log=True)
    return out


_STATES = {
    Status.PENDING: TrialState.WAITING,
    Status.RUNNING: TrialState.RUNNING,
    Status.COMPLETED: TrialState.COMPLETE,
    Status.DIVERGED: TrialState.FAIL,
    Status.FAILED: TrialState.FAIL,
}


def _trial_plan(t: TrialRow, objective: str, distributions: dict[str, FloatDistribution]) -> TrialPlan:
    value = objective_value(t, objective)
    state = _STATES[t.status]
    attrs: dict[str, Any] = {
        "trial_key": t.key,
        "level": t.level,
        "width": t.width,
        "seed": t.seed,
        "status": t.status.value,
        "tokens": t.tokens,
        "flops": t.flops,
        "wall_time": t.wall_time,
        "steps": t.steps,
        "device": t.device,
        "fingerprint": t.fingerprint,
        "parametrization": t.parametrization,
        "reused_from": t.reused_from,
    }
    # the hyperparameters this study does not sweep: fixed for the level or line
    attrs |= {name: float(getattr(t, name)) for name in SWEEPABLE if name not in distributions}
    if state is TrialState.COMPLETE and (value is None or not math.isfinite(value)):
        state, attrs["reason"] = TrialState.FAIL, f"completed without a finite {objective}"
    elif t.status is Status.DIVERGED:
        factor = t.spec.train.divergence_factor
        attrs["reason"] = (
            _last_line(t.error) or f"diverged by step {t.steps}: loss not finite or above {factor:g}x its first"
        )
    elif t.status is Status.FAILED:
        attrs["reason"] = _last_line(t.error) or "failed"
    return TrialPlan(
        key=t.key,
        level=t.level,
        state=state,
        value=value if state is TrialState.COMPLETE else None,
        params={name: float(getattr(t, name)) for name in distributions},
        distributions=distributions,
        user_attrs=_present(attrs),
        started=t.started_at,
        finished=t.finished_at,
    )


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _present(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes that have a value (Optuna's tables show the rest as empty anyway)."""
    return {k: v for k, v in attrs.items() if v is not None and v != []}
