"""Trial executors: run a level's trials on Ray Tune or in-process, report events to the driver."""

from __future__ import annotations

from telescope.trials.base import Executor, ExecutorSettings, PackFn, TrialEvents, TrialFn


def make_executor(
    settings: ExecutorSettings, trial_fn: TrialFn | None = None, pack_fn: PackFn | None = None
) -> Executor:
    """The executor `settings.kind` names, running `trial_fn` (default: the proxy trial),
    and packs of up to `settings.pack` trials through `pack_fn` (default with the proxy
    trial: its packed form; with a `trial_fn` of yours: none, one trial at a time).

    Ray is imported only when asked for; `close()` the executor when done.
    """
    if trial_fn is None:
        from telescope.proxy.train import run_trial, run_trials

        trial_fn, pack_fn = run_trial, pack_fn or run_trials
    if settings.kind == "local":
        from telescope.trials.local import LocalExecutor

        return LocalExecutor(settings, trial_fn, pack_fn)
    from telescope.trials.ray import RayExecutor

    return RayExecutor(settings, trial_fn, pack_fn)


__all__ = ["Executor", "ExecutorSettings", "PackFn", "TrialEvents", "TrialFn", "make_executor"]
