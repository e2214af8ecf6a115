"""An LR line of trials that extends itself while its best point sits on an edge.

The transfer check and the batch study both locate an optimum on a line of learning rates
at one width: run the line, look at it, and when the best point is on an edge run the
points the driver asks for next, each extension on a level of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from telescope.runs.stored import StoredRun
from telescope.spec import TrialResult, TrialSpec
from telescope.storage.rows import TrialRow

T = TypeVar("T")


@dataclass(frozen=True)
class LineStep(Generic[T]):
    """What the driver made of the line so far: its best point, the learning rates to run
    next (empty: the line is done) and whatever else it located (`outcome`)."""

    best_lr: float
    best_loss: float | None
    extension: tuple[float, ...]
    outcome: T


def run_line(
    run: StoredRun,
    width: int,
    lrs: Sequence[float],
    level_of: Callable[[int], int],
    trials_of: Callable[[Sequence[float]], list[tuple[str, TrialSpec]]],
    assess: Callable[[list[float], dict[str, TrialRow], int], LineStep[T]],
    on_finished: Callable[[str, TrialResult], None] = lambda key, result: None,
) -> tuple[list[float], LineStep[T]]:
    """Run the line `lrs` at `width` on level `level_of(0)`, then each extension j on level
    `level_of(j)`, until `assess(lrs so far, rows by key, extensions run)` asks for no more
    points. Returns every learning rate run, ascending, and the last step."""
    line, new, rows = sorted(lrs), list(lrs), {}
    extensions = 0
    while True:
        level = level_of(extensions)
        rows |= run.run_trials(level, width, [{"lr": lr} for lr in new], trials_of(new), on_finished=on_finished)
        step = assess(line, rows, extensions)
        run.finish_level(level, {"lr": step.best_lr}, step.best_loss)
        if not step.extension:
            return line, step
        new = list(step.extension)
        line = sorted(line + new)
        extensions += 1
