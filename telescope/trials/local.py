"""The in-process executor: trials run one after another in the caller's process.

For tests, laptops and quick GPU checks. It keeps the Ray executor's contract:
the same events, the same retry policy, nothing written anywhere, and torch
limited to `cpus_per_trial` threads while a trial runs.
"""

from __future__ import annotations

from typing import Sequence

from telescope.spec import StepMetrics, TrialSpec
from telescope.trials.attempts import run_with_retries
from telescope.trials.base import ExecutorSettings, TrialEvents, TrialFn
from telescope.trials.threads import threads_for, torch_threads


class _DriverFailed(BaseException):
    """Carries an exception raised by the caller's event handler out through the
    trial function, past the retry policy (which only catches `Exception`): a
    failing driver is not a failing trial and must not be retried."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


class LocalExecutor:
    def __init__(self, settings: ExecutorSettings, trial_fn: TrialFn):
        self.settings = settings
        self._trial_fn = trial_fn

    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        for key, spec in trials:
            self._run_one(key, spec, events)

    def _run_one(self, key: str, spec: TrialSpec, events: TrialEvents) -> None:
        def on_metrics(row: StepMetrics) -> None:
            try:
                events.metrics(key, [row])
            except Exception as exc:
                raise _DriverFailed(exc) from exc

        def on_retry(attempt: int) -> None:
            try:
                events.started(key)
            except Exception as exc:
                raise _DriverFailed(exc) from exc

        events.started(key)
        try:
            with torch_threads(threads_for(self.settings.cpus_per_trial)):
                result = run_with_retries(
                    self._trial_fn, spec, on_metrics, self.settings.max_retries, on_retry
                )
        except _DriverFailed as failure:
            raise failure.cause from None
        events.finished(key, result)

    def close(self) -> None:
        pass
