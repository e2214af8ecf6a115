"""The driver's side of the executor contract: trial events -> database + Parquet.

The driver is the only writer: executors report here, in the driver's process.
"""

from __future__ import annotations

from typing import Callable, Sequence

from telescope.runs.content import content_key
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
    reuse: bool = True,
) -> int:
    """Add `trials` to the level (idempotent) and run those not finished yet; returns how
    many ran. With `reuse`, a trial whose content key (telescope.runs.content) matches a
    trial that was trained before, in any run, takes its result and metrics instead. A
    trial cut off mid-run by a killed driver is `running` in the database: the caller
    resets those to pending once, when it resumes a sweep."""
    contents = {key: content_key(spec) for key, spec in trials}
    db.add_trials(sweep, level, trials, contents)
    # A finished trial whose metrics file was deleted or truncated runs again, so that every
    # finished row keeps its readable file.
    finished = {row.key for row in db.trials(sweep, level) if row.finished and store.exists(sweep, level, row.key)}
    todo = [(key, spec) for key, spec in trials if key not in finished]
    if reuse and todo:
        todo = _reuse(db, store, sweep, level, todo, contents, on_finished)
    if todo:
        executor.run(todo, TrialRecorder(db, store, sweep, level, on_started, on_finished))
    return len(todo)


def _reuse(
    db: Database,
    store: MetricsStore,
    sweep: str,
    level: int,
    todo: list[tuple[str, TrialSpec]],
    contents: dict[str, str],
    on_finished: Callable[[str, TrialResult], None],
) -> list[tuple[str, TrialSpec]]:
    """Record the trials of `todo` that a trained trial can stand in for; return the rest."""
    sources = db.reusable(contents[key] for key, _ in todo)
    left = []
    for key, spec in todo:
        source = sources.get(contents[key])
        usable = source is not None and (source.sweep, source.key) != (sweep, key)
        if not usable or not store.exists(source.sweep, source.level, source.key):
            left.append((key, spec))
            continue
        result = source.result()
        store.copy((source.sweep, source.level, source.key), sweep, level, key)
        db.record_results(sweep, [(key, result)], reused_from={key: f"{source.sweep}/{source.key}"})
        on_finished(key, result)
    return left
