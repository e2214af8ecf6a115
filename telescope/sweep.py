"""`telescope sweep`: config -> plan -> for each level: grid -> trials -> store -> narrow -> answer.

Resuming is running the same sweep again: every level's grid is a pure function of the
stored results of the levels before it, so a resumed sweep plans the same trials, skips
the finished ones and reaches the same answer as an uninterrupted run. The last level
grows past any edge of its sub-grid that its best point sits on, one lattice step at a
time, until the best is interior or on the edge of the whole range.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console

from telescope.config import SweepConfig
from telescope.cost import plan
from telescope.progress import SweepProgress
from telescope.remaining import Growth, LevelWork
from telescope.results import LevelResult, SweepResult
from telescope.runs.executor import make_executor
from telescope.runs.keys import trial_key
from telescope.runs.stored import RunRecord, StoredRun, open_run
from telescope.search import (
    Best,
    Grid,
    Outcome,
    best_point,
    extended_grid,
    fit_drift,
    initial_grid,
    next_grid,
    significantly_better,
)
from telescope.spec import Status, TrialResult, TrialSpec, objective_value
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.trials.base import Executor

KIND = "sweep"


def level_trials(config: SweepConfig, grid: Grid) -> list[tuple[str, dict[str, float], TrialSpec]]:
    return [
        (trial_key(f"L{grid.level}", point, seed), point, config.trial_spec(grid.width, point, seed))
        for point in grid.points()
        for seed in config.seeds.seeds()
    ]


def run_sweep(
    config: SweepConfig,
    db: Database,
    store: MetricsStore,
    name: str,
    *,
    executor: Executor | None = None,
    new: bool = False,
    console: Console | None = None,
    checks: dict[str, Any] | None = None,
    reuse: bool = True,
) -> SweepResult:
    """Run (or resume) a telescoping sweep and return its result, also stored in the database.
    A sweep that has
    completed trains nothing: its result is derived again from its stored trials.

    `checks`: what was checked before it, kept in the result by name: the report section
    of a transfer check (`telescope sweep --check-transfer`), the coord check of the user's
    model. `reuse=False` trains every trial, even
    those a trial trained before could stand in for (telescope.runs.content)."""
    own_executor = executor is None
    executor = executor or make_executor(config.executor)
    try:
        with open_run(
            db, store, executor, _record(config, name), (config.model, config.train), new=new, reuse=reuse
        ) as run:
            if checks:
                run.note(checks)
            result = _run_levels(config, run, console or Console(stderr=True, markup=False)).with_checks(checks or {})
            run.finish(result.to_dict())
    finally:
        if own_executor:
            executor.close()
    return result


def stop_before_level_zero(
    config: SweepConfig, db: Database, store: MetricsStore, executor: Executor, name: str, result: dict[str, Any]
) -> None:
    """Store the sweep as stopped before any trial, with `result` (a failed transfer check's
    section): running the sweep again, with --force, resumes it."""
    with open_run(db, store, executor, _record(config, name), (config.model, config.train)) as run:
        run.stop(result)


def _record(config: SweepConfig, name: str) -> RunRecord:
    return RunRecord(
        KIND,
        name,
        config.to_dict(),
        config.parametrization,
        config.widths.base,
        config.widths.calibration,
        config.widths.target,
    )


def _run_levels(config: SweepConfig, run: StoredRun, console: Console) -> SweepResult:
    plans = config.levels()
    costs = plan(config)
    planned = [LevelWork(lc.trials, lc.flops_per_trial, lc.newton_schulz_flops_per_trial) for lc in costs.levels]
    levels: list[LevelResult] = []
    optima: list[tuple[int, dict[str, float]]] = []
    warnings: list[str] = []
    previous_best = None
    grid = initial_grid(config.search.axes, config.widths.base)
    growth = Growth(costs.extension_trials_per_step, costs.expected_extension_trials)
    with SweepProgress(planned, console=console, growth=growth) as progress:
        for index in range(len(plans)):
            outcomes = _run_level(config, run, grid, progress)
            best = best_point(grid, outcomes)
            extension: list[str] = []
            if index == len(plans) - 1:
                grid, outcomes, best, extension = _extend_last_level(config, run, grid, outcomes, best, progress)
            following = next_grid(grid, outcomes, config.search.axes, config.narrowing)
            level_warnings = [*following.warnings, *extension]
            run.finish_level(grid.level, best.point, best.loss, level_warnings)
            progress.end_level()
            levels.append(_level_summary(grid, best, outcomes, level_warnings))
            optima.append((grid.width, best.point))
            warnings.extend(level_warnings)
            if config.seeds.early_stop and previous_best and not significantly_better(previous_best, best):
                warnings.append(
                    f"stopped after level {grid.level}: its best is not significantly better than level "
                    f"{grid.level - 1}'s"
                )
                break
            previous_best, grid = best, following
    return _result(config, run.name, levels, optima, warnings)


def _extend_last_level(
    config: SweepConfig, run: StoredRun, grid: Grid, outcomes: list[Outcome], best: Best, progress: SweepProgress
) -> tuple[Grid, list[Outcome], Best, list[str]]:
    """Grow the last level past the sub-grid edges its best sits on until the best is
    interior (or on the range's edge); returns the grown level and a note when it grew."""
    size, steps = grid.size, 0
    while (wider := extended_grid(grid, best, config.search.axes)) is not None:
        grid, steps = wider, steps + 1
        outcomes = _run_level(config, run, grid, progress, extending=True)
        best = best_point(grid, outcomes)
    if not steps:
        return grid, outcomes, best, []
    added = (grid.size - size) * config.seeds.per_point
    note = (
        f"level {grid.level}: its best sat on the edge of its sub-grid; the grid was extended "
        f"{steps} step(s) past it (+{added} trials), to {grid.shape}"
    )
    return grid, outcomes, best, [note]


def _run_level(
    config: SweepConfig, run: StoredRun, grid: Grid, progress: SweepProgress, extending: bool = False
) -> list[Outcome]:
    """Run the level's unfinished trials and return every trial's outcome, in grid order.
    `extending`: the level is already under way and `grid` adds points to it."""
    trials = level_trials(config, grid)
    points = {key: point for key, point, _ in trials}
    stored = {row.key: row for row in run.rows(grid.level)}
    if extending:
        progress.extend_level(sum(key not in stored for key in points))
    else:
        progress.start_level(grid.level, grid.width, len(trials))
        for row in stored.values():
            if row.finished and row.key in points:
                progress.trial_finished(row.status, row.flops or 0.0, row.wall_time or 0.0, resumed=True)
                progress.offer_best(points[row.key], objective_value(row, config.objective))

    def finished(key: str, result: TrialResult) -> None:
        progress.trial_finished(result.status, result.flops, result.wall_time)
        progress.offer_best(points[key], objective_value(result, config.objective))

    rows = run.run_trials(
        grid.level,
        grid.width,
        grid.points(),
        [(key, spec) for key, _, spec in trials],
        on_started=lambda key: progress.trial_started(),
        on_finished=finished,
    )
    return [Outcome(point, objective_value(rows[key], config.objective), rows[key].status) for key, point, _ in trials]


def _level_summary(grid: Grid, best: Best, outcomes: list[Outcome], warnings: list[str]) -> LevelResult:
    statuses = [Status(o.status) for o in outcomes]
    return LevelResult(
        level=grid.level,
        width=grid.width,
        grid=grid.shape,
        trials=len(outcomes),
        diverged=statuses.count(Status.DIVERGED),
        failed=statuses.count(Status.FAILED),
        best=best.point,
        best_loss=best.loss if math.isfinite(best.loss) else None,
        warnings=list(warnings),
    )


def _result(
    config: SweepConfig,
    name: str,
    levels: list[LevelResult],
    optima: list[tuple[int, dict[str, float]]],
    warnings: list[str],
) -> SweepResult:
    final = levels[-1]
    drift = fit_drift(optima, config.widths.target).axes if len({w for w, _ in optima}) >= 2 else None
    return SweepResult(
        sweep=name,
        parametrization=config.parametrization,
        objective=config.objective,
        base_width=config.widths.base,
        calibration_width=final.width,
        target_width=config.widths.target,
        best=final.best,
        best_loss=final.best_loss,
        fixed=dict(config.search.fixed),
        drift=drift,
        levels=tuple(levels),
        warnings=warnings,
    )
