"""The live view of a running sweep: level k of n, trial counts, time, best so far."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from telescope.spec import Status


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class _LevelCounts:
    total: int = 0
    done: int = 0
    running: int = 0
    diverged: int = 0
    failed: int = 0


def fit_trial_time(observed: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds per trial as `a + b * flops`, least squares over (flops, seconds) pairs, a and
    b >= 0: the fixed part dominates tiny proxies, the FLOPs part large ones."""
    n = len(observed)
    mean_f = sum(f for f, _ in observed) / n
    mean_t = sum(t for _, t in observed) / n
    var_f = sum((f - mean_f) ** 2 for f, _ in observed)
    if var_f <= 0 or mean_f <= 0:
        return 0.0, mean_t / mean_f if mean_f > 0 else 0.0
    b = sum((f - mean_f) * (t - mean_t) for f, t in observed) / var_f
    a = mean_t - b * mean_f
    if b < 0:
        return mean_t, 0.0
    if a < 0:
        return 0.0, sum(t for _, t in observed) / sum(f for f, _ in observed)
    return a, b


@dataclass
class SweepProgress:
    """Counts trials as events arrive and renders them.

    The remaining time is the planned trials still to run, each costed by a line
    `seconds = a + b * flops` fitted to the trials finished in this run, divided by the
    parallelism observed so far (trial seconds per wall second).
    """

    planned: list[tuple[int, float]]  # per level: trials, training FLOPs of one trial
    console: Console = field(default_factory=Console)
    level: int = 0
    width: int = 0
    counts: _LevelCounts = field(default_factory=_LevelCounts)
    best: str = "-"
    _best_loss: float = math.inf
    _left: list[int] = field(default_factory=list)
    _observed: list[tuple[float, float]] = field(default_factory=list)
    _started: float = field(default_factory=lambda: time.monotonic())
    _live: Live | None = None

    def __post_init__(self) -> None:
        self._left = [trials for trials, _ in self.planned]

    @property
    def n_levels(self) -> int:
        return len(self.planned)

    def __enter__(self) -> "SweepProgress":
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def start_level(self, level: int, width: int, total: int) -> None:
        self.level, self.width = level, width
        self.counts = _LevelCounts(total=total)
        self._best_loss = math.inf
        self._refresh()

    def extend_level(self, extra: int) -> None:
        """The level under way grew by `extra` trials (the last level's edge extension)."""
        self.counts.total += extra
        self._left[self.level] += extra
        self._refresh()

    def trial_started(self) -> None:
        self.counts.running += 1
        self._refresh()

    def trial_finished(self, status: Status, flops: float, seconds: float, resumed: bool = False) -> None:
        """Count a finished trial; `resumed` ones finished in an earlier run and do not
        enter the speed estimate."""
        if not resumed:
            self.counts.running = max(0, self.counts.running - 1)
            self._observed.append((flops, seconds))
        self.counts.done += 1
        self.counts.diverged += status is Status.DIVERGED
        self.counts.failed += status is Status.FAILED
        self._left[self.level] = max(0, self._left[self.level] - 1)
        self._refresh()

    def offer_best(self, point: dict[str, float], loss: float | None) -> None:
        """Show `point` as the best so far if its loss beats the best shown in this level."""
        if loss is not None and math.isfinite(loss) and loss < self._best_loss:
            values = ", ".join(f"{k}={v:.4g}" for k, v in point.items())
            self.best, self._best_loss = f"{values}  loss {loss:.4f}", loss
            self._refresh()

    def end_level(self) -> None:
        if self._live is None:  # not a terminal: one line per level instead of a live view
            self.console.print(self._line(), markup=False, highlight=False)

    def eta(self) -> float | None:
        if not self._observed:
            return None
        a, b = fit_trial_time(self._observed)
        elapsed = time.monotonic() - self._started
        parallel = max(1.0, sum(t for _, t in self._observed) / elapsed) if elapsed > 0 else 1.0
        work = sum(left * (a + b * flops) for left, (_, flops) in zip(self._left, self.planned))
        return work / parallel

    def _line(self) -> str:
        c = self.counts
        return (
            f"level {self.level + 1}/{self.n_levels} (width {self.width}): "
            f"{c.done}/{c.total} done, {c.running} running, {c.diverged} diverged, {c.failed} failed | "
            f"elapsed {_clock(time.monotonic() - self._started)}, remaining ~{_clock(self.eta())} | "
            f"best {self.best}"
        )

    def _render(self) -> Group:
        c = self.counts
        table = Table.grid(padding=(0, 2))
        table.add_row("level", f"{self.level + 1} of {self.n_levels}  (width {self.width})")
        table.add_row(
            "trials",
            Text.assemble(
                f"{c.done}/{c.total} done  {c.running} running  ",
                (f"{c.diverged} diverged", "yellow"),
                "  ",
                (f"{c.failed} failed", "red"),
            ),
        )
        table.add_row("time", f"{_clock(time.monotonic() - self._started)} elapsed, ~{_clock(self.eta())} remaining")
        table.add_row("best", self.best)
        return Group(Text("telescope sweep", style="bold"), table)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
