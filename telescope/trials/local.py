"""The in-process executor: trials (or packs of them) run one after another in the caller's process.

For tests, laptops and quick GPU checks. It keeps the Ray executor's contract:
the same events, the same retry policy, nothing written anywhere, and torch
limited to `cpus_per_trial` threads while a trial runs.
"""

from __future__ import annotations

from typing import Sequence

from telescope.spec import TrialSpec
from telescope.trials.attempts import run_pack_with_retries
from telescope.trials.base import ExecutorSettings, Packing, TrialEvents, TrialFn
from telescope.trials.packs import plan_packs
from telescope.trials.threads import threads_for, torch_threads


class _DriverFailed(BaseException):
    """Carries an exception raised by the caller's event handler out through the
    trial function, past the retry policy (which only catches `Exception`): a
    failing driver is not a failing trial and must not be retried."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


class LocalExecutor:
    def __init__(self, settings: ExecutorSettings, trial_fn: TrialFn, packing: Packing | None = None):
        self.settings = settings
        self._trial_fn = trial_fn
        self._packing = packing

    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        pack_size = self.settings.pack_size if self._packing is not None else 1
        keys = [self._packing.key(spec) if self._packing else None for _, spec in trials]
        for pack in plan_packs(keys, pack_size, slots=1):
            self._run_pack([trials[i] for i in pack], events)

    def _run_pack(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        keys = [key for key, _ in trials]

        def deliver(method, *args) -> None:
            try:
                method(*args)
            except Exception as exc:
                raise _DriverFailed(exc) from exc

        def callback(key: str):
            return lambda row: deliver(events.metrics, key, [row])

        for key in keys:
            events.started(key)
        try:
            with torch_threads(threads_for(self.settings.cpus_per_trial)):
                results = run_pack_with_retries(
                    self._trial_fn,
                    self._packing.train if self._packing else None,
                    [spec for _, spec in trials],
                    [callback(key) for key in keys],
                    self.settings.max_retries,
                    lambda index, attempt: deliver(events.started, keys[index]),
                )
        except _DriverFailed as failure:
            raise failure.cause from None
        for key, result in zip(keys, results):
            events.finished(key, result)

    def close(self) -> None:
        pass
