"""Trial executors: run keyed trials on Ray Tune or in-process, report events to the driver.

Executors know neither the model nor the database: the trial function and how to pack
trials (`Packing`) come from the caller (telescope.runs.executor gives the proxy's)."""

from __future__ import annotations

from telescope.trials.base import Executor, ExecutorSettings, PackFn, Packing, TrialEvents, TrialFn


def create_executor(settings: ExecutorSettings, trial_fn: TrialFn, packing: Packing | None = None) -> Executor:
    """The executor `settings.kind` names, running `trial_fn`, and packs of up to
    `settings.pack` trials with equal `packing.key` through `packing.train` (no `packing`:
    one trial at a time). Ray is imported only when asked for; `close()` the executor when done."""
    if settings.kind == "local":
        from telescope.trials.local import LocalExecutor

        return LocalExecutor(settings, trial_fn, packing)
    from telescope.trials.ray import RayExecutor

    return RayExecutor(settings, trial_fn, packing)


__all__ = ["Executor", "ExecutorSettings", "PackFn", "Packing", "TrialEvents", "TrialFn", "create_executor"]
