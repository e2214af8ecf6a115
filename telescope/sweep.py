"""`telescope sweep`: config -> plan -> for each level: grid -> trials -> store -> narrow -> answer.

Resuming is running the same sweep again: every level's grid is a pure function of the
stored results of the levels before it, so a resumed sweep plans the same trials, skips
the finished ones and reaches the same answer as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rich.console import Console

from telescope.config import SweepConfig
from telescope.cost import train_flops
from telescope.errors import TelescopeError
from telescope.progress import SweepProgress
from telescope.search import Grid, Outcome, best_point, fit_drift, initial_grid, next_grid, significantly_better
from telescope.spec import Status, TrialResult, TrialSpec
from telescope.storage.database import Database, TrialRow, config_hash
from telescope.storage.metrics import MetricsStore
from telescope.trials import make_executor
from telescope.trials.base import Executor
from telescope.trials.preflight import check_inputs
from telescope.trials.recorder import run_pending
from telescope.transfer_check.run import CheckSettings, run_sweep_check


def trial_key(level: int, point: dict[str, float], seed: int) -> str:
    """A readable key, stable across runs: the same level, point and seed give the same key."""
    values = "-".join(f"{name}={value:.6g}" for name, value in point.items())
    return f"L{level}-{values}-s{seed}"


def level_trials(config: SweepConfig, grid: Grid) -> list[tuple[str, dict[str, float], TrialSpec]]:
    return [
        (trial_key(grid.level, point, seed), point, config.trial_spec(grid.width, point, seed))
        for point in grid.points()
        for seed in config.seeds.seeds()
    ]


def open_sweep(db: Database, config: SweepConfig, name: str, new: bool = False) -> str:
    """Create the sweep, or reopen it to resume; a changed config is refused unless `new`,
    which starts a fresh sweep under the next free name (`NAME-2`, `NAME-3`, ...)."""
    settings = config.to_dict()
    existing = db.get_sweep(name)
    if existing is not None and new:
        taken = {s.name for s in db.list_sweeps()}
        name = next(f"{name}-{i}" for i in range(2, 10_000) if f"{name}-{i}" not in taken)
        existing = None
    if existing is None:
        db.create_sweep(
            name,
            settings,
            parametrization=config.parametrization,
            base_width=config.widths.base,
            calibration_width=config.widths.calibration,
            target_width=config.widths.target,
        )
        return name
    if existing.kind != "sweep":
        raise TelescopeError(f"{name!r} is a {existing.kind}, not a sweep; choose another --name")
    if existing.config_hash != config_hash(settings):
        raise TelescopeError(
            f"sweep {name!r} was started with a different configuration; "
            "rerun with --new to start a new sweep, or --name to pick another name"
        )
    if existing.status != "completed":
        db.reset_running(name)  # trials cut off by a killed driver run again from scratch
        db.update_sweep(name, status="running")
    return name


def run_sweep(
    config: SweepConfig,
    db: Database,
    store: MetricsStore,
    name: str,
    *,
    executor: Executor | None = None,
    new: bool = False,
    console: Console | None = None,
    check: CheckSettings | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a telescoping sweep and return its result, also stored in the database.

    With `check` (e.g. `settings_from_config(config)`: the sweep's first widths), a transfer
    check runs before level 0; on FAIL the sweep stops with TransferCheckFailed unless `force`.
    Its table and plot go into the result under "transfer_check"."""
    check_inputs(config.model, config.train, getattr(executor, "settings", config.executor))
    store.check_writable()
    with db.lease(name):  # before open_sweep, which resets trials left running
        name = open_sweep(db, config, name, new)
        stored = db.get_sweep(name)
        if stored is not None and stored.status == "completed" and stored.result:
            return stored.result
        own_executor = executor is None
        executor = executor or make_executor(config.executor)
        try:
            section = None
            if check is not None:
                section = run_sweep_check(check, db, store, executor, name, force)
            result = _run_levels(config, db, store, name, executor, console or Console(stderr=True, markup=False))
            if section is not None:
                result["transfer_check"] = section
        except BaseException:
            db.update_sweep(name, status="stopped")
            raise
        finally:
            if own_executor:
                executor.close()
        db.update_sweep(name, status="completed", result=result)
    return result


def _run_levels(
    config: SweepConfig, db: Database, store: MetricsStore, name: str, executor: Executor, console: Console
) -> dict[str, Any]:
    plans = config.levels()
    tokens = config.train.steps * config.train.batch_size * config.model.seq_len
    planned = [(p.trials, train_flops(config.model, p.width, tokens)) for p in plans]
    levels: list[dict[str, Any]] = []
    optima: list[tuple[int, dict[str, float]]] = []
    warnings: list[str] = []
    previous_best = None
    grid = initial_grid(config.search.axes, config.widths.base)
    with SweepProgress(planned, console=console) as progress:
        for _ in plans:
            outcomes = _run_level(config, db, store, name, executor, grid, progress)
            best = best_point(grid, outcomes)
            following = next_grid(grid, outcomes, config.search.axes, config.narrowing)
            db.finish_level(name, grid.level, best=best.point, best_loss=best.loss, warnings=following.warnings)
            progress.end_level()
            levels.append(_level_summary(grid, best, outcomes, following.warnings))
            optima.append((grid.width, best.point))
            warnings.extend(following.warnings)
            if config.seeds.early_stop and previous_best and not significantly_better(previous_best, best):
                warnings.append(
                    f"stopped after level {grid.level}: its best is not significantly better than level "
                    f"{grid.level - 1}'s"
                )
                break
            previous_best, grid = best, following
    return _result(config, name, levels, optima, warnings)


def _run_level(
    config: SweepConfig,
    db: Database,
    store: MetricsStore,
    name: str,
    executor: Executor,
    grid: Grid,
    progress: SweepProgress,
) -> list[Outcome]:
    """Run the level's unfinished trials and return every trial's outcome, in grid order."""
    trials = level_trials(config, grid)
    points = {key: point for key, point, _ in trials}
    db.plan_level(name, grid.level, width=grid.width, grid=grid.points())
    db.start_level(name, grid.level)
    progress.start_level(grid.level, grid.width, len(trials))
    for row in db.trials(name, grid.level):
        if row.finished:
            progress.trial_finished(row.status, row.flops or 0.0, row.wall_time or 0.0, resumed=True)
            progress.offer_best(points[row.key], _objective(config, row))

    def finished(key: str, result: TrialResult) -> None:
        progress.trial_finished(result.status, result.flops, result.wall_time)
        progress.offer_best(points[key], _objective(config, result))

    run_pending(
        db,
        store,
        executor,
        name,
        grid.level,
        [(key, spec) for key, _, spec in trials],
        on_started=lambda key: progress.trial_started(),
        on_finished=finished,
    )
    rows = {row.key: row for row in db.trials(name, grid.level)}
    return [Outcome(point, _objective(config, rows[key]), rows[key].status) for key, point, _ in trials]


def _objective(config: SweepConfig, result: TrialResult | TrialRow) -> float | None:
    return result.val_loss if config.objective == "val_loss" else result.train_loss


def _level_summary(grid: Grid, best, outcomes: list[Outcome], warnings: list[str]) -> dict[str, Any]:
    statuses = [Status(o.status) for o in outcomes]
    return {
        "level": grid.level,
        "width": grid.width,
        "grid": grid.shape,
        "trials": len(outcomes),
        "diverged": statuses.count(Status.DIVERGED),
        "failed": statuses.count(Status.FAILED),
        "best": best.point,
        "best_loss": best.loss if math.isfinite(best.loss) else None,
        "warnings": list(warnings),
    }


def _result(
    config: SweepConfig,
    name: str,
    levels: list[dict[str, Any]],
    optima: list[tuple[int, dict[str, float]]],
    warnings: list[str],
) -> dict[str, Any]:
    final = levels[-1]
    drift = None
    if len({w for w, _ in optima}) >= 2:
        drift = [dataclasses.asdict(axis) for axis in fit_drift(optima, config.widths.target).axes]
    return {
        "sweep": name,
        "parametrization": config.parametrization,
        "objective": config.objective,
        "base_width": config.widths.base,
        "calibration_width": final["width"],
        "target_width": config.widths.target,
        "best": final["best"],
        "best_loss": final["best_loss"],
        "fixed": dict(config.search.fixed),
        "drift": drift,
        "levels": levels,
        "warnings": warnings,
    }
