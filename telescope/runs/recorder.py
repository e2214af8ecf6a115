"""The driver's side of the executor contract: trial events -> database + Parquet.

The driver is the only writer: executors report here, in the driver's process.
"""

from __future__ import annotations

from typing import Callable, Sequence

from telescope.spec import StepMetrics, TrialResult, TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.trials.base import Executor


class TrialRecorder:
    """Keeps each running trial's step metrics in memory and stores a trial when it finishes:
    its Parquet file first, then its row, so a row that says finished always has its metrics."""

    def __init__(
        self,
        db: Database,
        store: MetricsStore,
        sweep: str,
        level: int,
        on_started: Callable[[str], None] = lambda key: None,
        on_finished: Callable[[str, TrialResult], None] = lambda key, result: None,
    ) -> None:
        self.db, self.store, self.sweep, self.level = db, store, sweep, level
        self.on_started, self.on_finished = on_started, on_finished
        self._rows: dict[str, list[StepMetrics]] = {}

    def started(self, key: str) -> None:
        self._rows[key] = []  # a retry starts over: rows of an abandoned attempt are dropped
        self.db.mark_running(self.sweep, [key])
        self.on_started(key)

    def metrics(self, key: str, rows: list[StepMetrics]) -> None:
        self._rows.setdefault(key, []).extend(rows)

    def finished(self, key: str, result: TrialResult) -> None:
        self.store.write(self.sweep, self.level, key, self._rows.pop(key, []))
        self.db.record_results(self.sweep, [(key, result)])
        self.on_finished(key, result)


def run_pending(
    db: Database,
    store: MetricsStore,
    executor: Executor,
    sweep: str,
    level: int,
    trials: Sequence[tuple[str, TrialSpec]],
    on_started: Callable[[str], None] = lambda key: None,
    on_finished: Callable[[str, TrialResult], None] = lambda key, result: None,
) -> int:
    """Add `trials` to the level (idempotent) and run those not finished yet; returns how
    many ran. A trial cut off mid-run by a killed driver is `running` in the database:
    the caller resets those to pending once, when it resumes a sweep."""
    db.add_trials(sweep, level, trials)
    # A finished trial whose metrics file was deleted or truncated runs again, so that every
    # finished row keeps its readable file.
    finished = {row.key for row in db.trials(sweep, level) if row.finished and store.exists(sweep, level, row.key)}
    todo = [(key, spec) for key, spec in trials if key not in finished]
    if todo:
        executor.run(todo, TrialRecorder(db, store, sweep, level, on_started, on_finished))
    return len(todo)
