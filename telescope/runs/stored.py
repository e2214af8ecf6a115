"""A stored run, opened the same way whatever its kind (sweep, transfer check, batch study).

`open_run` checks the metrics store, takes the run's lease, creates the run or reopens it
to resume (trials cut off by a killed driver go back to pending), and marks it stopped
when the driver raises. Inside, the driver reaches storage only through `StoredRun`: it
runs keyed trials level by level, records each level's outcome and finally the run's
result. A completed run is never written again: its driver derives the same result from
the stored trials and trains nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd

from telescope.errors import StorageError
from telescope.runs.preflight import check_inputs
from telescope.runs.recorder import run_pending
from telescope.spec import ModelShape, TrainSettings, TrialResult, TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.rows import SweepRow, TrialRow, config_hash
from telescope.trials.base import Executor, ExecutorSettings


@dataclass(frozen=True)
class RunRecord:
    """What names a run in the `sweeps` table. `settings` decide its trials: a run is
    resumed only with settings of the same hash."""

    kind: str
    name: str
    settings: Mapping[str, Any]
    parametrization: str
    base_width: int
    calibration_width: int
    target_width: int | None = None


class StoredRun:
    """An open run, its lease held. `completed`: it had finished before it was opened."""

    def __init__(
        self, db: Database, store: MetricsStore, executor: Executor, name: str, completed: bool, reuse: bool = True
    ) -> None:
        self.db, self.store, self.executor = db, store, executor
        self.name, self.completed, self.reuse = name, completed, reuse
        self.ran = 0  # trials trained since the run was opened

    def run_trials(
        self,
        level: int,
        width: int,
        grid: Sequence[Mapping[str, float]],
        trials: Sequence[tuple[str, TrialSpec]],
        on_started: Callable[[str], None] = lambda key: None,
        on_finished: Callable[[str, TrialResult], None] = lambda key, result: None,
    ) -> dict[str, TrialRow]:
        """Store the level's plan and trials, run those not finished, and return the rows
        of `trials` by key."""
        if not self.completed:
            self.db.plan_level(self.name, level, width=width, grid=grid)
            self.db.start_level(self.name, level)
            self.ran += run_pending(
                self.db, self.store, self.executor, self.name, level, trials, on_started, on_finished, self.reuse
            )
        rows = {row.key: row for row in self.db.trials(self.name, level)}
        return {key: rows[key] for key, _ in trials}

    def rows(self, level: int | None = None) -> list[TrialRow]:
        return self.db.trials(self.name, level)

    def metrics(self, row: TrialRow) -> pd.DataFrame:
        return self.store.read(self.name, row.level, row.key)

    def finish_level(
        self, level: int, best: Mapping[str, float] | None, best_loss: float | None, warnings: Sequence[str] = ()
    ) -> None:
        if not self.completed:
            self.db.finish_level(self.name, level, best=best, best_loss=best_loss, warnings=warnings)

    def finish(self, result: Mapping[str, Any]) -> None:
        if not self.completed:
            self.db.update_sweep(self.name, status="completed", result=dict(result))

    def note(self, result: Mapping[str, Any]) -> None:
        """Store `result` while the run is under way (what was checked before it), so that
        `telescope status` shows it before the run finishes."""
        if not self.completed:
            self.db.update_sweep(self.name, result=dict(result))

    def stop(self, result: Mapping[str, Any]) -> None:
        """End the run as stopped, with `result` saying why; running it again resumes it."""
        if not self.completed:
            self.db.update_sweep(self.name, status="stopped", result=dict(result))


@contextmanager
def open_run(
    db: Database,
    store: MetricsStore,
    executor: Executor,
    record: RunRecord,
    inputs: tuple[ModelShape, TrainSettings],
    new: bool = False,
    reuse: bool = True,
) -> Iterator[StoredRun]:
    """Open `record`'s run for its driver (see the module docstring), after checking the
    trials' `inputs` (model shape and training settings: data and device) and the store.
    With `new`, a taken name becomes the next free one (`NAME-2`, `NAME-3`, ...):
    `StoredRun.name` says which. Without `reuse`, every trial trains, even one whose
    content key matches a trial trained before (telescope.runs.content)."""
    check_inputs(*inputs, getattr(executor, "settings", ExecutorSettings()))
    store.check_writable()
    name = _free_name(db, record.name) if new else record.name
    with db.lease(name):  # before anything is reset: a second driver must not touch the first's trials
        existing = db.get_sweep(name)
        if existing is None:
            db.create_sweep(
                name,
                record.settings,
                kind=record.kind,
                parametrization=record.parametrization,
                base_width=record.base_width,
                calibration_width=record.calibration_width,
                target_width=record.target_width,
            )
        else:
            _check_resumable(existing, record)
        completed = existing is not None and existing.status == "completed"
        if existing is not None and not completed:
            db.reset_running(name)
            db.update_sweep(name, status="running")
        run = StoredRun(db, store, executor, name, completed, reuse)
        try:
            yield run
        except BaseException:
            if not completed:
                db.update_sweep(name, status="stopped")
            raise


def _free_name(db: Database, name: str) -> str:
    taken = {s.name for s in db.list_sweeps()}
    if name not in taken:
        return name
    return next(f"{name}-{i}" for i in range(2, 10_000) if f"{name}-{i}" not in taken)


def _check_resumable(existing: SweepRow, record: RunRecord) -> None:
    if existing.kind != record.kind:
        raise StorageError(f"{record.name!r} is a {existing.kind}, not a {record.kind}; choose another --name")
    if existing.config_hash != config_hash(record.settings):
        raise StorageError(
            f"{record.kind} {record.name!r} was started with a different configuration; "
            "rerun with --new to start a new one, or --name to pick another name"
        )
