"""How long a sweep has left: wall seconds per trial measured at each width, fitted to what
a proxy trial spends its time on, and the last level's possible growth past its edges.

A trial's wall seconds (as a level's wall clock sees them: parallel slots and packs
included) are modelled as

    seconds = fixed + per_flop * flops + per_muon_flop * muon_flops

`flops` are its training FLOPs (forward + backward, telescope.cost.train_flops) and
`muon_flops` Muon's Newton-Schulz FLOPs (telescope.cost.newton_schulz_flops), which grow
as width^3 and are half the training FLOPs at width 128 on the README's tiny sweep.
`fixed` is what does not grow with FLOPs: process and model setup, validation, and, on a
small proxy, most of each step (kernel launches, norms, softmax, the optimizer's
elementwise work). Each finished level measures the model at its width:

- three or more widths fit all three coefficients (non-negative least squares on
  relative errors);
- two widths fit `fixed` and one rate for both kinds of FLOPs;
- one width leaves the split to PRIOR_FIXED_SHARE.

The last level grows one grid step past each sub-grid edge its best sits on, again and
again (telescope.search.extended_grid), which a plan cannot foresee. Until that level
has finished, the estimate is a range, `low` if it does not grow and `high` if it grows one
step along every axis (Plan.extension_trials_per_step trials at its width), around
`expected`: one step as it grows on average, with its best equally likely in any cell
(Plan.expected_extension_trials; on a 3 x 3 grid 8 cells of 9 are on an edge).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple, Sequence

# With one width measured: the share of a trial's wall time there that does not grow with
# FLOPs. Measured on the README's tiny sweep (widths 32 -> 128, Ray, 2 trials at a time on
# 2 shared CPUs): 0.51 fits width 64, 0.62 width 128; packs of 5 trained in one thread,
# 0.65 and 0.72.
PRIOR_FIXED_SHARE = 0.6


class LevelWork(NamedTuple):
    """A level's planned trials and one trial's work."""

    trials: int
    flops: float  # training FLOPs of one trial
    muon_flops: float = 0.0  # Newton-Schulz FLOPs of one trial


@dataclass(frozen=True)
class TrialCost:
    """Wall seconds of one trial: fixed + per_flop * flops + per_muon_flop * muon_flops."""

    fixed: float
    per_flop: float
    per_muon_flop: float

    def __call__(self, work: LevelWork) -> float:
        return self.fixed + self.per_flop * work.flops + self.per_muon_flop * work.muon_flops


def fit_trial_cost(measured: Sequence[tuple[LevelWork, float]]) -> TrialCost:
    """The cost model through `measured` (a level's work, its wall seconds per trial);
    levels of equal work (one width) count as one point, their mean."""
    points: dict[tuple[float, float], list[float]] = {}
    for work, seconds in measured:
        points.setdefault((work.flops, work.muon_flops), []).append(seconds)
    if not points:
        raise ValueError("no measured level")
    rows = [(flops, muon, sum(s) / len(s)) for (flops, muon), s in points.items()]
    if len(rows) == 1:
        flops, muon, seconds = rows[0]
        total = flops + muon
        if total <= 0:
            return TrialCost(seconds, 0.0, 0.0)
        rate = (1 - PRIOR_FIXED_SHARE) * seconds / total
        return TrialCost(PRIOR_FIXED_SHARE * seconds, rate, rate)
    if len(rows) == 2:  # one rate for both kinds of FLOPs
        fixed, rate = _nonnegative_fit([(1.0, f + m) for f, m, _ in rows], [s for *_, s in rows])
        return TrialCost(fixed, rate, rate)
    return TrialCost(*_nonnegative_fit([(1.0, f, m) for f, m, _ in rows], [s for *_, s in rows]))


def _nonnegative_fit(features: list[tuple[float, ...]], seconds: list[float]) -> tuple[float, ...]:
    """Non-negative coefficients c minimising sum(((x . c) - s) / s)^2: the least-squares fit
    on every subset of the features, the best whose coefficients are all >= 0 (a handful of
    features, so every subset is cheap)."""
    import numpy as np

    n = len(features[0])
    weights = np.array([1.0 / max(s, 1e-9) for s in seconds])
    X = np.array(features, dtype=float) * weights[:, None]
    y = np.array(seconds, dtype=float) * weights
    scale = np.maximum(np.abs(X).max(axis=0), 1e-300)  # FLOPs (1e11) beside 1: same footing
    best: tuple[float, np.ndarray] | None = None
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            cols = list(subset)
            coef, *_ = np.linalg.lstsq(X[:, cols] / scale[cols], y, rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(n)
            full[cols] = coef / scale[cols]
            residual = float(((X @ full - y) ** 2).sum())
            if best is None or residual < best[0] - 1e-12:
                best = (residual, full)
    if best is None:  # every fit wanted a negative coefficient: the mean, as fixed time
        return (float(np.mean(seconds)),) + (0.0,) * (n - 1)
    return tuple(float(c) for c in best[1])


class Growth(NamedTuple):
    """Trials one step of the last level's growth past its edges adds: along every axis
    (`step`), and on average over where its best sits (`expected`)."""

    step: int = 0
    expected: float = 0.0


class Estimate(NamedTuple):
    """Seconds left: `low` if the last level does not grow past its edges, `high` if it
    grows one step along every axis, `expected` if it grows one step as on average (all
    three equal when it cannot grow, or has finished)."""

    low: float
    high: float
    expected: float


@dataclass
class _Level:
    """One level as the clock sees it."""

    work: LevelWork  # trials: planned; the real count once the level starts
    done: int = 0  # finished, in any run
    ran: int = 0  # finished in this run (the ones that took time here)
    running: int = 0  # started in this run and not finished
    began: float | None = None  # when its first trial started in this run
    ended: float | None = None
    grew: int = 0  # steps its grid grew past its edges

    @property
    def trials(self) -> int:
        return self.work.trials

    def seconds_per_trial(self, now: float) -> float | None:
        """Wall seconds per trial measured on this level in this run, from its first trial's
        start (what comes before, e.g. starting Ray's workers, happens once)."""
        if not self.ran or self.began is None:
            return None
        worked = self.ran + self.running / 2  # trials under way count as half done
        return ((self.ended if self.ended is not None else now) - self.began) / worked


@dataclass
class RemainingTime:
    """Estimates the wall time left from the wall seconds per trial measured on each level.

    A level measures its own seconds per trial (its wall time / the trials it ran), which
    takes in parallel trials, packs and fixed costs as they are. A level not yet measured
    takes the cost model fitted to the finished levels (fit_trial_cost); the level under
    way takes its own rate while no level has finished, or once it has run longer than the
    model says it should.
    """

    levels: list[_Level]
    growth: Growth = Growth()

    @classmethod
    def from_plan(cls, planned: Sequence[LevelWork], growth: Growth = Growth()) -> "RemainingTime":
        return cls([_Level(LevelWork(*work)) for work in planned], growth)

    def start(self, level: int, trials: int) -> None:
        lv = self.levels[level]
        lv.work = lv.work._replace(trials=trials)

    def extend(self, level: int, extra: int) -> None:
        lv = self.levels[level]
        lv.work = lv.work._replace(trials=lv.trials + extra)
        lv.grew += 1

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

    def grew(self) -> int:
        """Steps the last level grew past its edges."""
        return self.levels[-1].grew

    def remaining(self, now: float) -> Estimate | None:
        """Seconds left, or None before any trial has finished in this run."""
        finished = [lv for lv in self.levels if lv.ended is not None and lv.ran]
        basis = [(lv.work, lv.seconds_per_trial(now)) for lv in finished or [lv for lv in self.levels if lv.ran]]
        measured = [(work, seconds) for work, seconds in basis if seconds is not None]
        if not measured:
            return None
        cost = fit_trial_cost(measured)
        left, per_trial = 0.0, cost(self.levels[-1].work)
        for lv in self.levels:
            if lv.ended is not None:
                continue
            trials_left = max(0, lv.trials - lv.done)
            own = lv.seconds_per_trial(now)
            spent = now - lv.began if lv.began is not None else 0.0
            expected = cost(lv.work) * (trials_left + lv.ran)  # as the finished widths predict
            if own is not None and (not finished or spent > expected):  # its own rate is all there is
                left += own * max(0.0, trials_left - lv.running / 2)
                per_trial = own if lv is self.levels[-1] else per_trial
            else:
                left += max(0.0, expected - spent)
        if self.levels[-1].ended is not None:
            return Estimate(left, left, left)
        return Estimate(left, left + self.growth.step * per_trial, left + self.growth.expected * per_trial)
