"""The live view of a running sweep: which level, trial counts, time, best so far.

Levels are numbered from 0, as `telescope plan`, `status`, the warnings and the report
number them; the view adds the position, e.g. `level 1 (2 of 3), width 64`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from telescope.spec import Status

# Before a second width has run, how a level's wall seconds per FLOP scale with the FLOPs of
# one trial: spf ~ flops**k. Small proxies do not use a device fully (fixed per-step and
# per-trial costs dominate), so a trial 4x the FLOPs takes about 4**(1 + k) = 2.5x as long.
# Fitted to three runs of the README's tiny sweep (widths 32 -> 128, Ray, 2 shared CPUs, at
# different loads): after level 0 each estimate came within 26% of the time the planned
# levels then took. Two finished levels replace it with their own fit.
PRIOR_EXPONENT = -0.35


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
class _Level:
    """One level as the clock sees it."""

    trials: int  # planned; the real count once the level starts
    flops: float  # training FLOPs of one trial
    done: int = 0  # finished, in any run
    ran: int = 0  # finished in this run (the ones that took time here)
    running: int = 0  # started in this run and not finished
    began: float | None = None  # when its first trial started in this run
    ended: float | None = None

    def seconds_per_flop(self, now: float) -> float | None:
        """Wall seconds per FLOP measured on this level in this run, from its first trial's
        start (what comes before, e.g. starting Ray's workers, happens once)."""
        if not self.ran or self.began is None or self.flops <= 0:
            return None
        worked = self.ran + self.running / 2  # trials under way count as half done
        return ((self.ended if self.ended is not None else now) - self.began) / (worked * self.flops)


@dataclass
class RemainingTime:
    """Estimates the wall time left from the wall seconds per FLOP measured on each level.

    A level measures its own rate (wall seconds in the level / FLOPs of the trials it ran),
    which takes in parallel trials, packs and fixed costs as they are. A level not yet
    measured takes the rate of the widths measured so far, extrapolated in the FLOPs of one
    trial as a power law: fitted once two levels have finished, PRIOR_EXPONENT before.
    """

    levels: list[_Level]

    @classmethod
    def from_plan(cls, planned: list[tuple[int, float]]) -> "RemainingTime":
        return cls([_Level(trials, flops) for trials, flops in planned])

    def start(self, level: int, trials: int) -> None:
        self.levels[level].trials = trials

    def extend(self, level: int, extra: int) -> None:
        self.levels[level].trials += extra

    def start_trial(self, level: int, now: float) -> None:
        lv = self.levels[level]
        lv.running += 1
        if lv.began is None:
            lv.began = now

    def finish_trial(self, level: int, resumed: bool) -> None:
        """Count a finished trial; one that was not started in this run (resumed, or reused
        from a trial trained before) took none of its time."""
        lv = self.levels[level]
        lv.done += 1
        if not resumed and lv.running > 0:
            lv.ran += 1
            lv.running -= 1

    def end(self, level: int, now: float) -> None:
        self.levels[level].ended = now

    def remaining(self, now: float) -> float | None:
        """Seconds left, or None before any trial has finished in this run."""
        finished = [lv for lv in self.levels if lv.ended is not None and lv.ran]
        measured = [(lv.flops, lv.seconds_per_flop(now)) for lv in finished or [lv for lv in self.levels if lv.ran]]
        measured = [(flops, rate) for flops, rate in measured if rate is not None]
        if not measured:
            return None
        rate = _power_law(measured)  # type: ignore[arg-type]
        left = 0.0
        for lv in self.levels:
            if lv.ended is not None:
                continue
            trials_left = max(0, lv.trials - lv.done)
            own = lv.seconds_per_flop(now)
            spent = now - lv.began if lv.began is not None else 0.0
            expected = rate(lv.flops) * lv.flops * (trials_left + lv.ran)  # as the finished widths predict
            if own is not None and (not finished or spent > expected):  # its own rate is all there is
                left += own * lv.flops * max(0.0, trials_left - lv.running / 2)
            else:
                left += max(0.0, expected - spent)
        return left


def _power_law(points: list[tuple[float, float]]):
    """seconds per FLOP as a function of a trial's FLOPs: a least-squares line in log-log
    through `points` (flops, seconds per flop), slope clamped to [-1, 0] (a bigger trial
    takes no less time, and no more time per FLOP); PRIOR_EXPONENT with one trial size."""
    xs = [math.log(f) for f, _ in points]
    ys = [math.log(max(s, 1e-30)) for _, s in points]  # a level that took no time
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x > 1e-12:
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var_x
        slope = min(0.0, max(-1.0, slope))
    else:
        slope = PRIOR_EXPONENT
    return lambda flops: math.exp(mean_y + slope * (math.log(flops) - mean_x))


@dataclass
class SweepProgress:
    """Counts trials as events arrive and renders them: a live view on a terminal, one line
    per level otherwise, and a closing note with the time taken against the estimate made
    after the first level.

    `dashboard` is where `telescope sweep --dashboard` serves, and `notice` what the database
    is doing while it is unavailable.
    """

    dashboard: ClassVar[str | None] = None  # set by `telescope sweep --dashboard` while it serves

    planned: list[tuple[int, float]]  # per level: trials, training FLOPs of one trial
    console: Console = field(default_factory=Console)
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
    _first_estimate: float | None = None  # total wall time as estimated after the first level
    _live: Live | None = None
    notice: str = ""  # e.g. "database unavailable, retrying (23 s)"

    def __post_init__(self) -> None:
        self._clock = RemainingTime.from_plan(self.planned)

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
            self._first_estimate = None if remaining is None else self.elapsed() + remaining
        if self._live is None:  # not a terminal: one line per level instead of a live view
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._refresh()

    def elapsed(self) -> float:
        return self._now() - self._started

    def eta(self) -> float | None:
        """Seconds left in the sweep, or None until a trial has finished in this run."""
        return self._clock.remaining(self._now())

    def rows(self) -> list[tuple[str, Text | str]]:
        """The view's rows, label and text; a terminal shows them as a grid."""
        if self.level is None:
            trials = sum(t for t, _ in self.planned)
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
        rows.append(("time", f"{clock(self.elapsed())} elapsed, ~{clock(self.eta())} remaining"))
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
        took = f"sweep took {clock(self.elapsed())}"
        if self._first_estimate is None:
            return took
        return f"{took}; estimated {clock(self._first_estimate)} after the first level"

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
