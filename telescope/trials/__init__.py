"""Trial executors: run a level's trials on Ray Tune or in-process, report events to the driver."""

from __future__ import annotations

from telescope.trials.base import Executor, ExecutorSettings, TrialEvents, TrialFn


def make_executor(settings: ExecutorSettings, trial_fn: TrialFn | None = None) -> Executor:
    """The executor `settings.kind` names, running `trial_fn` (default: the proxy trial).

    Ray is imported only when asked for; `close()` the executor when done.
    """
    if trial_fn is None:
        from telescope.proxy.train import run_trial

        trial_fn = run_trial
    if settings.kind == "local":
        from telescope.trials.local import LocalExecutor

        return LocalExecutor(settings, trial_fn)
    from telescope.trials.ray import RayExecutor

    return RayExecutor(settings, trial_fn)


__all__ = ["Executor", "ExecutorSettings", "TrialEvents", "TrialFn", "make_executor"]
