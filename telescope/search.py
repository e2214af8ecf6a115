"""The telescoping search (docs/design.md §1) as pure functions: grids, narrowing, edge rule, drift fit.

Level 0 runs a full log-spaced grid at the base width. Each next level doubles the
width, centres a sub-grid on the previous level's best point, halves the spacing and
shrinks the point count per hyperparameter by `shrink` (default 4^(-1/k)), so every
level costs about the same. No torch and no I/O: results come in as plain data.

Everything is computed in log space. A grid axis is the lattice
`log(value) = offset + j * log_spacing`; the previous best is always a lattice point of
the next grid (for odd counts it sits in the middle unless the range clips the window).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

from telescope.errors import TelescopeError
from telescope.spec import Status

# Relative tolerance (in log space, i.e. ~1e-9 relative in value) for "same point".
_LOG_TOL = 1e-9


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Axis:
    """One swept hyperparameter: a log range [lo, hi] and the level-0 point count."""

    name: str
    lo: float
    hi: float
    points: int


@dataclass(frozen=True)
class Narrowing:
    """How the grid narrows per doubling of the width."""

    shrink: float | Literal["auto"] = "auto"  # count factor per level; auto = 4^(-1/k)
    odd: bool = True  # round counts to odd numbers so the previous best is the centre
    min_points: int = 3  # never fewer points per hyperparameter than this
    halve_spacing: bool = True  # False keeps the level-0 spacing (a plain shrinking window)
    edge_rule: Literal["keep", "widen"] = "keep"  # spacing when the best sits on a sub-grid edge

    def shrink_factor(self, k: int) -> float:
        return 4.0 ** (-1.0 / k) if self.shrink == "auto" else float(self.shrink)


@dataclass(frozen=True)
class Widths:
    """Base width N0 (level 0), calibration width Nc (the widest proxy), target width N."""

    base: int
    calibration: int
    target: int

    def levels(self) -> list[int]:
        """Proxy widths, doubling from base up to calibration inclusive."""
        out, w = [], self.base
        while w <= self.calibration:
            out.append(w)
            w *= 2
        return out


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class AxisGrid:
    name: str
    values: tuple[float, ...]  # ascending, inside the axis range
    log_spacing: float  # natural-log distance between neighbours
    spacing_rule: Literal["initial", "halved", "kept", "widened", "unchanged"] = "initial"

    @property
    def edge_rule_fired(self) -> bool:
        return self.spacing_rule in ("kept", "widened")


@dataclass(frozen=True)
class Grid:
    """The points one level runs, and the warnings raised while building it."""

    level: int
    width: int
    axes: tuple[AxisGrid, ...]
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> str:
        """E.g. "8x8"."""
        return "x".join(str(len(a.values)) for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def points(self) -> list[dict[str, float]]:
        """Every grid point as {name: value}, in a fixed order (first axis slowest)."""
        names = [a.name for a in self.axes]
        return [dict(zip(names, combo)) for combo in itertools.product(*(a.values for a in self.axes))]

    def axis(self, name: str) -> AxisGrid:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)


def level_counts(axes: Sequence[Axis], narrowing: Narrowing, level: int) -> tuple[int, ...]:
    """Points per hyperparameter at `level`: points * shrink^level, rounded, at least min_points.

    Computed from the level-0 count (not the previous rounded count) so rounding errors do
    not compound. Odd rounding goes to the nearest odd integer, ties up: 4 -> 5, 2 -> 3,
    which with the defaults gives the paper's 8x8 -> 5x5 -> 3x3 -> 3x3.
    """
    if level == 0:
        return tuple(a.points for a in axes)
    s = narrowing.shrink_factor(len(axes))
    counts = []
    for a in axes:
        ideal = a.points * s**level
        n = 2 * math.floor(ideal / 2) + 1 if narrowing.odd else math.floor(ideal + 0.5)
        counts.append(max(narrowing.min_points, n))
    return tuple(counts)


def initial_grid(axes: Sequence[Axis], width: int) -> Grid:
    """Level 0: `points` log-spaced values over [lo, hi] for every axis."""
    out = []
    for a in axes:
        llo, lhi = math.log(a.lo), math.log(a.hi)
        h = (lhi - llo) / (a.points - 1) if a.points > 1 else 0.0
        logs = [llo + j * h for j in range(a.points)]
        out.append(AxisGrid(a.name, _to_values(logs, a), h, "initial"))
    return Grid(0, width, tuple(out))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Outcome:
    """One finished trial: its point, its objective value and its status."""

    point: Mapping[str, float]
    loss: float | None
    status: Status | str


@dataclass(frozen=True)
class Best:
    """A level's best point: seed-averaged loss (+inf if any seed diverged), per-seed losses."""

    point: dict[str, float]
    loss: float
    losses: tuple[float, ...]

    @property
    def std_error(self) -> float | None:
        n = len(self.losses)
        if n < 2 or not all(math.isfinite(x) for x in self.losses):
            return None
        mean = sum(self.losses) / n
        var = sum((x - mean) ** 2 for x in self.losses) / (n - 1)
        return math.sqrt(var / n)


class NoUsableResults(TelescopeError):
    """Every trial of a level diverged or failed: there is no best point to narrow on."""


def best_point(grid: Grid, results: Iterable[Outcome | tuple]) -> Best:
    """The best point of a level, averaging seeds.

    Diverged trials (and non-finite losses) count as +inf; failed trials are excluded.
    Ties are broken deterministically: the point nearest the grid centre, then the
    smallest values in axis order.
    """
    per_point: dict[tuple[int, ...], list[float]] = {}
    for r in results:
        o = r if isinstance(r, Outcome) else Outcome(*r)
        status = Status(o.status)
        if status is Status.FAILED:
            continue
        if status not in (Status.COMPLETED, Status.DIVERGED):
            raise ValueError(f"unfinished trial passed to best_point: status {status.value}")
        loss = o.loss if status is Status.COMPLETED and o.loss is not None else math.inf
        if not math.isfinite(loss):
            loss = math.inf
        per_point.setdefault(_grid_index(grid, o.point), []).append(loss)
    if not per_point or all(math.isinf(v) for vs in per_point.values() for v in vs):
        raise NoUsableResults(
            f"level {grid.level} (width {grid.width}): every trial diverged or failed; "
            "lower the search range or check the trial errors"
        )

    def key(idx: tuple[int, ...]) -> tuple:
        losses = per_point[idx]
        mean = sum(losses) / len(losses)
        off_centre = sum(abs(i - (len(a.values) - 1) / 2) for i, a in zip(idx, grid.axes))
        return (mean, off_centre, idx)

    idx = min(per_point, key=key)
    losses = per_point[idx]
    point = {a.name: a.values[i] for a, i in zip(grid.axes, idx)}
    return Best(point, sum(losses) / len(losses), tuple(losses))


def _grid_index(grid: Grid, point: Mapping[str, float]) -> tuple[int, ...]:
    if set(point) != {a.name for a in grid.axes}:
        raise ValueError(f"point {dict(point)} does not match grid axes {[a.name for a in grid.axes]}")
    idx = []
    for a in grid.axes:
        lv = math.log(point[a.name])
        j = min(range(len(a.values)), key=lambda i: abs(math.log(a.values[i]) - lv))
        if abs(math.log(a.values[j]) - lv) > 1e-6 * max(1.0, a.log_spacing):
            raise ValueError(f"{a.name}={point[a.name]} is not a point of the level-{grid.level} grid")
        idx.append(j)
    return tuple(idx)


# --------------------------------------------------------------------------- narrowing


def next_grid(
    prev: Grid,
    results: Iterable[Outcome | tuple],
    axes: Sequence[Axis],
    narrowing: Narrowing,
) -> Grid:
    """The next level's grid (twice the width) from the previous level's grid and results.

    Per axis: centred on the previous best, spacing halved (or kept/widened by the edge
    rule when the best sat on an edge of a sub-grid), count from `level_counts`, window
    shifted inward to stay inside [lo, hi] (points dropped only if it cannot fit).
    """
    best = best_point(prev, results)
    level = prev.level + 1
    counts = level_counts(axes, narrowing, level)
    warnings: list[str] = []
    out = []
    for a, g, n in zip(axes, prev.axes, counts):
        llo, lhi, lbest = math.log(a.lo), math.log(a.hi), math.log(best.point[a.name])
        on_low, on_high = lbest <= math.log(g.values[0]) + _LOG_TOL, lbest >= math.log(g.values[-1]) - _LOG_TOL
        at_range_edge = (on_low and lbest <= llo + _LOG_TOL) or (on_high and lbest >= lhi - _LOG_TOL)
        if at_range_edge:
            side = "lo" if lbest <= llo + _LOG_TOL else "hi"
            warnings.append(
                f"level {prev.level}: best {a.name}={best.point[a.name]:.4g} is on the range edge "
                f"search.{a.name}.{side}; widen the range"
            )
        if (on_low or on_high) and len(g.values) > 1 and not at_range_edge:
            rule = "widened" if narrowing.edge_rule == "widen" else "kept"
            h = g.log_spacing * (2.0 if rule == "widened" else 1.0)
            warnings.append(
                f"level {prev.level}: best {a.name}={best.point[a.name]:.4g} is on the edge of its "
                f"sub-grid; the optimum moved more than the grid sees, spacing {rule} instead of halved"
            )
        elif narrowing.halve_spacing:
            rule, h = "halved", g.log_spacing / 2
        else:
            rule, h = "unchanged", g.log_spacing
        logs = _window(lbest, h, n, llo, lhi, prefer_up=best.point[a.name] < g.values[-1])
        out.append(AxisGrid(a.name, _to_values(logs, a), h, rule))
    return Grid(level, prev.width * 2, tuple(out), tuple(warnings))


def _window(centre: float, h: float, n: int, llo: float, lhi: float, prefer_up: bool) -> list[float]:
    """n lattice points centre + j*h around the centre, shifted inward to fit [llo, hi]."""
    if h <= 0 or n <= 1:
        return [centre]
    below = (n - 1) // 2
    above = n - 1 - below
    if above > below and not prefer_up:  # even count: extra point above unless best was on top
        below, above = above, below
    lo_j, hi_j = -below, above
    room_below = math.floor((centre - llo) / h + _LOG_TOL)  # lattice steps that fit below
    room_above = math.floor((lhi - centre) / h + _LOG_TOL)
    if lo_j < -room_below:
        shift = -room_below - lo_j
        lo_j, hi_j = lo_j + shift, hi_j + shift
    if hi_j > room_above:
        shift = hi_j - room_above
        lo_j, hi_j = lo_j - shift, hi_j - shift
    lo_j = max(lo_j, -room_below)  # only when the window is wider than the range
    return [centre + j * h for j in range(lo_j, hi_j + 1)]


def _to_values(logs: Sequence[float], a: Axis) -> tuple[float, ...]:
    # exp(log(lo)) is not exactly lo: snap the range ends and clamp, so that the ends are
    # the configured numbers and range checks are exact.
    llo, lhi = math.log(a.lo), math.log(a.hi)
    out = []
    for x in logs:
        if abs(x - llo) < _LOG_TOL:
            out.append(a.lo)
        elif abs(x - lhi) < _LOG_TOL:
            out.append(a.hi)
        else:
            out.append(min(a.hi, max(a.lo, math.exp(x))))
    return tuple(out)


# --------------------------------------------------------------------------- edge extension

Direction = Literal["down", "up"]


def extend_line(lrs: Sequence[float], direction: Direction, n: int = 2, step: float | None = None) -> tuple[float, ...]:
    """The `n` new learning rates beyond the line's edge in `direction`, ascending.

    They continue the line's spacing on that side (the ratio of its two outermost points)
    unless `step` is given.
    """
    if direction not in ("down", "up"):
        raise TelescopeError(f"extension direction must be 'down' or 'up', got {direction!r}")
    if n < 1:
        raise TelescopeError(f"an extension needs at least 1 point, got {n}")
    line = sorted(float(v) for v in lrs)
    if len(line) < 2 or line[0] <= 0 or not math.isfinite(line[-1]):
        raise TelescopeError(f"cannot extend a line of fewer than 2 positive learning rates: {line}")
    if step is None:
        step = line[-1] / line[-2] if direction == "up" else line[1] / line[0]
    if not (math.isfinite(step) and step > 1):
        raise TelescopeError(f"grid step factor must be > 1, got {step}")
    if direction == "up":
        return tuple(line[-1] * step**k for k in range(1, n + 1))
    return tuple(line[0] / step**k for k in range(n, 0, -1))


def extended_grid(grid: Grid, best: Best, axes: Sequence[Axis]) -> Grid | None:
    """The last level's grid grown by one lattice step past each edge of its sub-grid that
    the best point sits on, or None when the best is interior or the next step would leave
    the range: the sweep then runs the new points and asks again, so the answer is never a
    sub-grid edge it could have looked past."""
    out, grew = [], False
    for a, g in zip(axes, grid.axes):
        value = best.point[a.name]
        direction: Direction | None = "down" if value == g.values[0] else "up" if value == g.values[-1] else None
        if direction is not None and len(g.values) > 1:
            (new,) = extend_line(g.values, direction, 1, math.exp(g.log_spacing))
            if math.log(a.lo) - _LOG_TOL <= math.log(new) <= math.log(a.hi) + _LOG_TOL:
                (new,) = _to_values([math.log(new)], a)
                g = dataclasses.replace(g, values=tuple(sorted(g.values + (new,))))
                grew = True
        out.append(g)
    return dataclasses.replace(grid, axes=tuple(out)) if grew else None


# --------------------------------------------------------------------------- noise


def significantly_better(previous: Best, current: Best, significance: float = 0.05) -> bool:
    """One-sided Welch t-test: is `current`'s loss lower than `previous`'s?

    Needs >= 2 seeds on both; with fewer there is no noise estimate and the answer is True
    (never stop early on a single seed).
    """
    a, b = previous.losses, current.losses
    if len(a) < 2 or len(b) < 2:
        return True
    if not all(math.isfinite(x) for x in a + b):
        return math.isfinite(current.loss) and not math.isfinite(previous.loss)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return mb < ma
    from scipy import stats  # lazy: only sweeps with seeds need it

    t = (ma - mb) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t > stats.t.ppf(1 - significance, dof)


# --------------------------------------------------------------------------- drift fit


@dataclass(frozen=True)
class AxisDrift:
    """log x*(n) = log x_inf - alpha / n, fitted over the per-level optima of one axis."""

    name: str
    x_inf: float  # extrapolated optimum at infinite width
    alpha: float  # drift coefficient (log units times width)
    at_target: float  # extrapolated optimum at the target width
    at_calibration: float  # the grid optimum at the widest proxy (the plain answer)
    alpha_se: float | None = None  # standard errors; None with 2 levels (exact fit)
    log_x_inf_se: float | None = None
    log_at_target_se: float | None = None

    def at(self, width: int) -> float:
        """The fit's optimum at `width`."""
        return self.at_inverse_width(1 / width)

    def at_inverse_width(self, inverse_width: float) -> float:
        """The fit's optimum at width 1 / `inverse_width` (0: infinite width)."""
        return self.x_inf * math.exp(-self.alpha * inverse_width)


@dataclass(frozen=True)
class DriftFit:
    target_width: int
    widths: tuple[int, ...]
    axes: tuple[AxisDrift, ...]

    def at_target(self) -> dict[str, float]:
        return {a.name: a.at_target for a in self.axes}


def fit_drift(optima: Sequence[tuple[int, Mapping[str, float]]], target_width: int) -> DriftFit:
    """Least-squares fit of log x*(n) = log x* - alpha/n per hyperparameter.

    `optima` is [(width, best point)] per level (>= 2 distinct widths). Returns the fit,
    the extrapolated optimum at `target_width` and, with >= 3 levels, standard errors.
    """
    widths = [w for w, _ in optima]
    if len(set(widths)) < 2:
        raise ValueError("fit_drift needs optima at >= 2 distinct widths")
    u = [1.0 / w for w in widths]
    n = len(u)
    ubar = sum(u) / n
    suu = sum((x - ubar) ** 2 for x in u)
    ut = 1.0 / target_width
    calibration = optima[max(range(n), key=lambda i: widths[i])][1]
    out = []
    for name in optima[0][1]:
        y = [math.log(p[name]) for _, p in optima]
        ybar = sum(y) / n
        slope = sum((ui - ubar) * (yi - ybar) for ui, yi in zip(u, y)) / suu
        intercept = ybar - slope * ubar
        se_alpha = se_c = se_t = None
        if n > 2:
            ssr = sum((yi - intercept - slope * ui) ** 2 for ui, yi in zip(u, y))
            s = math.sqrt(ssr / (n - 2))
            se_alpha = s / math.sqrt(suu)
            se_c = s * math.sqrt(1 / n + ubar**2 / suu)
            se_t = s * math.sqrt(1 / n + (ut - ubar) ** 2 / suu)
        out.append(
            AxisDrift(
                name=name,
                x_inf=math.exp(intercept),
                alpha=-slope,
                at_target=math.exp(intercept + slope * ut),
                at_calibration=calibration[name],
                alpha_se=se_alpha,
                log_x_inf_se=se_c,
                log_at_target_se=se_t,
            )
        )
    return DriftFit(target_width, tuple(widths), tuple(out))


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class LevelPlan:
    level: int
    width: int
    counts: tuple[int, ...]  # points per hyperparameter, in axis order
    seeds: int

    @property
    def shape(self) -> str:
        return "x".join(map(str, self.counts))

    @property
    def trials(self) -> int:
        return math.prod(self.counts) * self.seeds


def plan_levels(widths: Widths, axes: Sequence[Axis], narrowing: Narrowing, seeds: int = 1) -> list[LevelPlan]:
    """Expected width and grid shape of every level (before any result is known).

    Clipping at the range edges can only remove points, so these are upper bounds.
    """
    return [LevelPlan(level, w, level_counts(axes, narrowing, level), seeds) for level, w in enumerate(widths.levels())]
