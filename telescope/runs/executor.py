"""The executor every command that trains uses: the proxy's trials (or the user's model's),
packed as telescope.training.train packs them."""

from __future__ import annotations

from telescope.trials import create_executor
from telescope.trials.base import Executor, ExecutorSettings, Packing, TrialFn


def make_executor(
    settings: ExecutorSettings, trial_fn: TrialFn | None = None, packing: Packing | None = None
) -> Executor:
    """The executor `settings.kind` names, running proxy trials (`run_trial`) packed by
    `pack_key`, or your `trial_fn`, one at a time unless you give its `packing` too.
    Ray is imported only when asked for; `close()` the executor when done."""
    if trial_fn is None:
        from telescope.training.train import pack_key, run_trial, run_trials

        trial_fn, packing = run_trial, packing or Packing(key=pack_key, train=run_trials)
    return create_executor(settings, trial_fn, packing)
