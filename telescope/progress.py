"""The live view of a running sweep: which level, trial counts, time, best so far.

Levels are numbered from 0, as `telescope plan`, `status`, the warnings and the report
number them; the view adds the position, e.g. `level 1 (2 of 3), width 64`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from telescope.remaining import Estimate, Growth, LevelWork, RemainingTime
from telescope.spec import Status


def clock(seconds: float | None) -> str:
    """`h:mm:ss`, or `?` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def level_label(level: int, n_levels: int, width: int) -> str:
    """E.g. `level 1 (2 of 3), width 64`: the level's number as stored, then its position."""
    return f"level {level} ({level + 1} of {n_levels}), width {width}"


@dataclass
class SweepProgress:
    """Counts trials as events arrive and renders them: a live view on a terminal, one line
    per level otherwise, and a closing note with the time taken against the estimate made
    after the first level.

    `dashboard` is where `telescope sweep --dashboard` serves, and `notice` what the database
    is doing while it is unavailable.
    """

    dashboard: ClassVar[str | None] = None  # set by `telescope sweep --dashboard` while it serves

    # Per level: trials, training FLOPs of one trial, Newton-Schulz FLOPs of one trial
    # (LevelWork, or a tuple of the first two or all three).
    planned: Sequence[LevelWork | tuple]
    console: Console = field(default_factory=Console)
    growth: Growth = Growth()  # trials one step of the last level's growth past its edges adds
    level: int | None = None  # None until the first level starts
    width: int = 0
    total: int = 0
    done: int = 0
    running: int = 0
    diverged: int = 0
    failed: int = 0
    best: str = "-"
    _best_loss: float = math.inf
    _clock: RemainingTime = field(init=False)
    _started: float = field(default_factory=lambda: time.monotonic())
    _first_estimate: tuple[float, Estimate] | None = None  # after the first level: elapsed, time left
    _live: Live | None = None
    notice: str = ""  # e.g. "database unavailable, retrying (23 s)"

    def __post_init__(self) -> None:
        self.planned = [LevelWork(*work) for work in self.planned]
        self._clock = RemainingTime.from_plan(self.planned, self.growth)

    @property
    def n_levels(self) -> int:
        return len(self.planned)

    def __enter__(self) -> "SweepProgress":
        _open_views.append(self)
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        _open_views.remove(self)
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
        if exc[0] is None and self.level is not None:
            self.console.print(self.closing_note(), markup=False, highlight=False, soft_wrap=True)

    def start_level(self, level: int, width: int, total: int) -> None:
        self.level, self.width, self.total = level, width, total
        self.done = self.running = self.diverged = self.failed = 0
        self._best_loss, self.best = math.inf, "-"
        self._clock.start(level, total)
        self._refresh()

    def extend_level(self, extra: int) -> None:
        """The level under way grew by `extra` trials (the last level's edge extension)."""
        self.total += extra
        self._clock.extend(self._level(), extra)
        self._refresh()

    def trial_started(self) -> None:
        self.running += 1
        self._clock.start_trial(self._level(), self._now())
        self._refresh()

    def trial_finished(self, status: Status, flops: float, seconds: float, resumed: bool = False) -> None:
        """Count a finished trial; `resumed` ones finished in an earlier run and do not
        enter the time estimate. (`flops` and `seconds` are the trial's own; the estimate
        uses the wall clock instead, which sees parallel and packed trials as they ran.)"""
        if not resumed:
            self.running = max(0, self.running - 1)
        self.done += 1
        self.diverged += status is Status.DIVERGED
        self.failed += status is Status.FAILED
        self._clock.finish_trial(self._level(), resumed)
        self._refresh()

    def offer_best(self, point: dict[str, float], loss: float | None) -> None:
        """Show `point` as the best so far if its loss beats the best shown in this level."""
        if loss is not None and math.isfinite(loss) and loss < self._best_loss:
            values = ", ".join(f"{k}={v:.4g}" for k, v in point.items())
            self.best, self._best_loss = f"{values}  loss {loss:.4f}", loss
            self._refresh()

    def end_level(self) -> None:
        level = self._level()
        self._clock.end(level, self._now())
        if self._first_estimate is None and self._clock.levels[level].ran:
            remaining = self.eta()
            self._first_estimate = None if remaining is None else (self.elapsed(), remaining)
        if self._live is None:  # not a terminal: one line per level instead of a live view
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._refresh()

    def elapsed(self) -> float:
        return self._now() - self._started

    def eta(self) -> Estimate | None:
        """Seconds left in the sweep (a range while the last level may still grow past its
        edges), or None until a trial has finished in this run."""
        return self._clock.remaining(self._now())

    def rows(self) -> list[tuple[str, Text | str]]:
        """The view's rows, label and text; a terminal shows them as a grid."""
        if self.level is None:
            trials = sum(work.trials for work in self.planned)
            rows: list[tuple[str, Text | str]] = [
                ("level", f"starting: {self.n_levels} levels, {trials} trials planned")
            ]
        else:
            rows = [
                ("level", level_label(self.level, self.n_levels, self.width)),
                (
                    "trials",
                    Text.assemble(
                        f"{self.done}/{self.total} done  {self.running} running  ",
                        (f"{self.diverged} diverged", "yellow"),
                        "  ",
                        (f"{self.failed} failed", "red"),
                    ),
                ),
            ]
        rows.append(("time", f"{clock(self.elapsed())} elapsed, {remaining_text(self.eta(), self._clock.grew() > 0)}"))
        if self.level is not None:
            rows.append(("best", self.best))
        if self.dashboard:
            rows.append(("dashboard", self.dashboard))
        if self.notice:
            rows.append(("", Text(self.notice, style="yellow")))
        return rows

    def line(self) -> str:
        """The view as one line (a log, not a terminal)."""
        return " | ".join(f"{label} {text}" if label != "level" else str(text) for label, text in self.rows())

    def closing_note(self) -> str:
        """The time taken, and after the first level: the time it then estimated was left and
        the time it took, e.g. `sweep took 0:08:14; after the first level: estimated 0:04:28
        to go (0:03:36 to 0:05:42 as the last level grows), took 0:04:51, 8% more (the last
        level grew 1 step)`."""
        took = f"sweep took {clock(self.elapsed())}"
        if self._first_estimate is None:
            return took
        at, estimate = self._first_estimate
        guess = f"{clock(estimate.expected)} to go{_range_text(estimate)}"
        spent = self.elapsed() - at
        actual = clock(spent)
        if estimate.expected > 0:
            off = round(100 * (spent / estimate.expected - 1))
            actual += f", {abs(off)}% {'more' if off >= 0 else 'less'}"
        grew = self._clock.grew()
        if grew:
            actual += f" (the last level grew {grew} step{'s' if grew > 1 else ''})"
        elif estimate.high > estimate.low:
            actual += " (the last level did not grow)"
        return f"{took}; after the first level: estimated {guess}, took {actual}"

    def _level(self) -> int:
        if self.level is None:
            raise RuntimeError("start_level() first")
        return self.level

    def _now(self) -> float:
        return time.monotonic()

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        for label, text in self.rows():
            table.add_row(label, text)
        return Group(Text("telescope sweep", style="bold"), table)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())


def remaining_text(estimate: Estimate | None, grown: bool = False) -> str:
    """`~0:04:28 remaining`, `~0:04:28 remaining (0:03:36 to 0:05:42 as the last level grows)`."""
    if estimate is None:
        return "~? remaining"
    return f"~{clock(estimate.expected)} remaining{_range_text(estimate, grown)}"


def _range_text(estimate: Estimate, grown: bool = False) -> str:
    if estimate.high <= estimate.low:
        return ""
    growing = "it grows further" if grown else "the last level grows"
    return f" ({clock(estimate.low)} to {clock(estimate.high)} as {growing})"


_open_views: list[SweepProgress] = []


def database_waiting(waited: float | None, console: Console | None = None) -> None:
    """The hook for `Database.retrier.on_wait`: `database unavailable, retrying (23 s)` in
    the open live view (None clears it), or as a line on `console` when there is none."""
    notice = f"database unavailable, retrying ({waited:.0f} s)" if waited is not None else ""
    live = [view for view in _open_views if view._live is not None]
    for view in live:
        view.notice = notice
        view._refresh()
    if not live and notice:
        (console or Console(stderr=True)).print(notice, markup=False, highlight=False)
