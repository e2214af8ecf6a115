"""Does the optimal learning rate transfer across width (or depth)? The pure analysis behind
`telescope transfer-check`: LR lines, the sub-grid optimum locator, line extension,
seed uncertainty and the PASS/FAIL verdict. No torch, no I/O; results come in as numbers.
The axis is width by default; with `axis="depth"` the sizes are depths, and the rows and
reasons say so (`depth`, `deeper_better`).

One width's check is a line of base learning rates in log steps of `step` (default
sqrt(2)) around a default. Its optimum is located below grid resolution by a parabola in
log(lr) through the best point and its two neighbours. A best point on the lowest or
highest lr means the optimum lies outside the line: the caller runs `extend_line` points
on that side and locates again, up to a cap; the optimum is never extrapolated.

Positions and drifts are measured in grid steps: log(lr2 / lr1) / log(step). Telescoping
(docs/design.md §1) halves the grid spacing per doubling of the width, so it can follow an optimum
that moves by about one step per doubling; that is the default PASS threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

from telescope.errors import TelescopeError
from telescope.search import Direction, extend_line

SQRT2 = math.sqrt(2.0)
DEFAULT_POINTS = 7
DEFAULT_EXTENSION_POINTS = 2
DEFAULT_MAX_EXTENSIONS = 3
DEFAULT_THRESHOLD_STEPS = 1.0

Edge = Literal["low", "high"]
Axis = Literal["width", "depth"]
_BIGGER = {"width": "wider", "depth": "deeper"}

# Drifts that equal the threshold up to float noise (e.g. exactly one step) pass.
_STEP_TOL = 1e-9


# --------------------------------------------------------------------------- the line


def lr_line(center: float, points: int = DEFAULT_POINTS, step: float = SQRT2) -> tuple[float, ...]:
    """`points` learning rates in ratios of `step`, ascending, centred (in log space) on `center`.

    With an odd count `center` itself is on the line; with an even one it sits halfway
    between the two middle points.
    """
    _check_positive("center learning rate", center)
    _check_step(step)
    if points < 3:
        raise TelescopeError(f"an LR line needs at least 3 points to locate an optimum, got {points}")
    half = (points - 1) / 2
    return tuple(center * step ** (i - half) for i in range(points))


def grid_steps(lr: float, reference: float, step: float = SQRT2) -> float:
    """How many grid steps `lr` lies above `reference` (negative when below)."""
    return math.log(lr / reference) / math.log(step)


# --------------------------------------------------------------------------- one curve


@dataclass(frozen=True)
class Optimum:
    """The located optimum of one loss-vs-lr curve.

    `lr`/`loss` are the parabola's vertex and value when the fit was usable (`refined`),
    otherwise the best grid point. `index` is the best grid point's position in the line
    sorted by lr. `edge` says whether the best grid point is the lowest or highest lr:
    then the true optimum may lie beyond it and the line must be extended.
    When every point diverged, `loss` is +inf and the line is flagged on its low edge,
    since lower learning rates are the ones that might train.
    """

    lr: float
    loss: float
    grid_lr: float
    grid_loss: float
    index: int
    edge: Edge | None
    refined: bool

    @property
    def on_edge(self) -> bool:
        return self.edge is not None

    @property
    def direction(self) -> Direction | None:
        """Where the line must be extended to bracket the optimum, or None if it is bracketed."""
        return {"low": "down", "high": "up", None: None}[self.edge]

    @property
    def diverged(self) -> bool:
        """Every point of the curve diverged: there is no optimum on this line."""
        return math.isinf(self.loss)


def locate_optimum(lrs: Sequence[float], losses: Sequence[float]) -> Optimum:
    """Locate the loss minimum of one width's LR line below grid resolution.

    Non-finite losses (NaN, +inf: diverged) count as +inf. The best grid point is the lowest
    loss; exact ties go to the point nearest the middle of the line. If it is interior and
    both neighbours are finite, a parabola in log(lr) through the three points gives the
    optimum and the interpolated minimum loss; if the parabola opens downward or its vertex
    leaves the bracket of the two neighbours, the best grid point is kept.
    """
    lr, x, y = _sorted_curve(lrs, losses)
    n = len(x)
    if np.all(np.isinf(y)):
        return Optimum(lr[0], math.inf, lr[0], math.inf, 0, "low", False)

    middle = (n - 1) / 2
    candidates = np.flatnonzero(y == y.min())
    i = int(min(candidates, key=lambda j: (abs(j - middle), j)))
    grid_lr, grid_loss = float(lr[i]), float(y[i])
    edge: Edge | None = "low" if i == 0 else "high" if i == n - 1 else None
    if edge is None and math.isfinite(y[i - 1]) and math.isfinite(y[i + 1]):
        vertex = _parabola_vertex(x[i - 1 : i + 2], y[i - 1 : i + 2])
        if vertex is not None:
            xv, yv = vertex
            # The vertex of a convex parabola is at most its points; min() only absorbs roundoff.
            return Optimum(float(np.exp(xv)), min(yv, grid_loss), grid_lr, grid_loss, i, None, True)
    return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, i, edge, False)


def _parabola_vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Vertex (x, y) of the parabola through three points, or None if it is no usable minimum.

    Newton's divided differences, so unequal spacing (after an extension) is fine.
    """
    (x0, x1, x2), (y0, y1, y2) = x, y
    d01 = (y1 - y0) / (x1 - x0)
    d12 = (y2 - y1) / (x2 - x1)
    curvature = (d12 - d01) / (x2 - x0)
    if not curvature > 0:
        return None
    xv = (x0 + x1) / 2 - d01 / (2 * curvature)
    if not x0 <= xv <= x2:
        return None
    yv = y0 + d01 * (xv - x0) + curvature * (xv - x0) * (xv - x1)
    return float(xv), float(yv)


def _sorted_curve(lrs: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lr, log lr, loss) sorted by lr, non-finite losses as +inf; validates the line."""
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if lr.ndim != 1 or loss.shape != lr.shape:
        raise TelescopeError(f"an LR line needs one loss per learning rate, got {lr.size} lrs and {loss.size} losses")
    if lr.size < 3:
        raise TelescopeError(f"an LR line needs at least 3 points to locate an optimum, got {lr.size}")
    if not np.all(np.isfinite(lr) & (lr > 0)):
        raise TelescopeError(f"learning rates must be positive and finite, got {list(map(float, lr))}")
    order = np.argsort(lr)
    lr, y = lr[order], loss[order]
    if np.any(np.diff(lr) <= 0):
        raise TelescopeError(f"learning rates on a line must be distinct, got {list(map(float, lr))}")
    return lr, np.log(lr), np.where(np.isfinite(y), y, math.inf)


# --------------------------------------------------------------------------- extension


def next_extension(
    lrs: Sequence[float],
    optimum: Optimum,
    extensions_done: int,
    *,
    max_extensions: int = DEFAULT_MAX_EXTENSIONS,
    n: int = DEFAULT_EXTENSION_POINTS,
    step: float | None = None,
) -> tuple[float, ...]:
    """The points to run next for one width's line: () once the optimum is bracketed or
    `max_extensions` extensions have been run (the optimum then stays unresolved)."""
    if optimum.direction is None or extensions_done >= max_extensions:
        return ()
    return extend_line(lrs, optimum.direction, n, step)


# --------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class SeededOptimum:
    """One width's optimum with K seeds per point.

    `mean` is located on the seed-mean curve (a point where any seed diverged counts as
    diverged, as in the sweep); `per_seed` on each seed's own curve. `std_steps` is the
    sample standard deviation of the per-seed optima in grid steps, over the seeds whose
    curve did not diverge entirely; None with fewer than two such seeds.
    """

    mean: Optimum
    per_seed: tuple[Optimum, ...]
    std_steps: float | None

    @property
    def seed_lrs(self) -> tuple[float, ...]:
        """The per-seed optima of the seeds that did not diverge everywhere."""
        return tuple(o.lr for o in self.per_seed if not o.diverged)


def locate_seeds(lrs: Sequence[float], losses_by_seed: Sequence[Sequence[float]], step: float = SQRT2) -> SeededOptimum:
    """Locate one width's optimum per seed and on the seed-mean curve.

    `losses_by_seed[k][j]` is seed k's loss at `lrs[j]`.
    """
    table = np.asarray(losses_by_seed, dtype=float)
    if table.ndim != 2 or table.shape[0] < 1:
        raise TelescopeError("losses_by_seed must be a list of per-seed loss lists, one loss per learning rate")
    table = np.where(np.isfinite(table), table, math.inf)
    per_seed = tuple(locate_optimum(lrs, row) for row in table)
    mean = locate_optimum(lrs, table.mean(axis=0))
    std = spread_steps([o.lr for o in per_seed if not o.diverged], step)
    return SeededOptimum(mean, per_seed, std)


def spread_steps(lrs: Sequence[float], step: float = SQRT2) -> float | None:
    """Sample standard deviation of learning rates in grid steps; None for fewer than 2."""
    if len(lrs) < 2:
        return None
    return float(np.std(np.log(np.asarray(lrs, dtype=float)) / math.log(step), ddof=1))


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class WidthRow:
    """One width in the table of optima. `optimum_steps` is relative to the first width."""

    width: int
    optimum_lr: float
    optimum_steps: float
    best_loss: float
    edge: Edge | None
    seed_std_steps: float | None

    @property
    def on_edge(self) -> bool:
        return self.edge is not None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "on_edge": self.on_edge}


@dataclass(frozen=True)
class DoublingRow:
    """One pair of consecutive widths: the optimum's drift and whether wider was better.

    `drift_std` is the spread across seeds of the per-seed drift per doubling: paired by
    seed when both widths have the same seeds, otherwise the two widths' spreads combined.
    """

    width_lo: int
    width_hi: int
    doublings: float
    drift_steps: float
    drift_per_doubling: float
    drift_std: float | None
    drift_ok: bool
    loss_lo: float
    loss_hi: float
    wider_better: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """PASS/FAIL with the tables that explain it and one line per reason. `widths` holds
    one row per size along `axis` (widths, or depths)."""

    passed: bool
    threshold_steps: float
    loss_tolerance: float
    widths: tuple[WidthRow, ...]
    doublings: tuple[DoublingRow, ...]
    reasons: tuple[str, ...]
    axis: Axis = "width"

    @property
    def label(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def width_rows(self) -> list[dict[str, Any]]:
        return [self._named(r.as_dict()) for r in self.widths]

    def doubling_rows(self) -> list[dict[str, Any]]:
        return [self._named(r.as_dict()) for r in self.doublings]

    def _named(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row's keys in the axis's words: `depth_lo`, `deeper_better` across depths."""
        if self.axis == "width":
            return row
        return {k.replace("width", self.axis).replace("wider", _BIGGER[self.axis]): v for k, v in row.items()}


def verdict(
    widths: Sequence[int],
    optima: Sequence[float],
    best_losses: Sequence[float],
    threshold_steps: float = DEFAULT_THRESHOLD_STEPS,
    *,
    edges: Sequence[Edge | None] | None = None,
    seed_optima: Sequence[Sequence[float]] | None = None,
    loss_tolerance: float = 0.0,
    step: float = SQRT2,
    axis: Axis = "width",
) -> Verdict:
    """PASS iff, for every pair of consecutive widths (or depths: `axis`), the optimum drifts by at most
    `threshold_steps` grid steps per doubling, the wider width's best loss is below the
    narrower one's by more than `loss_tolerance`, and no width's optimum is unresolved.

    `optima[i]` and `best_losses[i]` belong to `widths[i]` (ascending; not necessarily
    adjacent powers of two: drift is divided by log2 of the width ratio). `edges[i]` is the
    edge a width's optimum still sits on after its extensions (None when bracketed), and
    `seed_optima[i]` its per-seed optimum learning rates, for the uncertainties.
    """
    ws, lrs, losses = _check_verdict_inputs(widths, optima, best_losses, threshold_steps, loss_tolerance, step)
    k = len(ws)
    edges = tuple(edges) if edges is not None else (None,) * k
    seeds = tuple(tuple(s) for s in seed_optima) if seed_optima is not None else ((),) * k
    if len(edges) != k or len(seeds) != k:
        raise TelescopeError(f"edges and seed_optima need one entry per width ({k})")

    rows = tuple(
        WidthRow(w, lr, grid_steps(lr, lrs[0], step), loss, e, spread_steps(s, step))
        for w, lr, loss, e, s in zip(ws, lrs, losses, edges, seeds)
    )
    doublings = tuple(
        _doubling(a, b, seeds[i], seeds[i + 1], threshold_steps, loss_tolerance, step)
        for i, (a, b) in enumerate(zip(rows, rows[1:]))
    )
    failures = [_unresolved_reason(r, axis) for r in rows if r.on_edge or math.isinf(r.best_loss)]
    failures += [
        f"drift {d.drift_per_doubling:+.2f} steps per doubling between {d.width_lo} and {d.width_hi} "
        f"exceeds {threshold_steps:g}"
        for d in doublings
        if not d.drift_ok
    ]
    failures += [_loss_reason(d, loss_tolerance) for d in doublings if not d.wider_better]
    passed = not failures
    reasons = tuple(failures) if failures else _pass_reasons(rows, doublings, threshold_steps, axis)
    return Verdict(passed, threshold_steps, loss_tolerance, rows, doublings, reasons, axis)


def verdict_from_optima(
    widths: Sequence[int],
    located: Sequence[Optimum | SeededOptimum],
    threshold_steps: float = DEFAULT_THRESHOLD_STEPS,
    *,
    loss_tolerance: float = 0.0,
    step: float = SQRT2,
    axis: Axis = "width",
) -> Verdict:
    """`verdict` on each width's (or depth's) located (final, extended) line: its optimum, interpolated
    minimum loss and edge, and with seeds the seed-mean optimum plus per-seed spreads."""
    means = [o.mean if isinstance(o, SeededOptimum) else o for o in located]
    seeds = [o.seed_lrs if isinstance(o, SeededOptimum) else () for o in located]
    return verdict(
        widths,
        [o.lr for o in means],
        [o.loss for o in means],
        threshold_steps,
        edges=[o.edge for o in means],
        seed_optima=seeds,
        loss_tolerance=loss_tolerance,
        step=step,
        axis=axis,
    )


def _doubling(
    lo: WidthRow,
    hi: WidthRow,
    seeds_lo: Sequence[float],
    seeds_hi: Sequence[float],
    threshold: float,
    tolerance: float,
    step: float,
) -> DoublingRow:
    doublings = math.log2(hi.width / lo.width)
    drift = grid_steps(hi.optimum_lr, lo.optimum_lr, step)
    per_doubling = drift / doublings
    return DoublingRow(
        width_lo=lo.width,
        width_hi=hi.width,
        doublings=doublings,
        drift_steps=drift,
        drift_per_doubling=per_doubling,
        drift_std=_drift_std(seeds_lo, seeds_hi, lo.seed_std_steps, hi.seed_std_steps, doublings, step),
        drift_ok=abs(per_doubling) <= threshold + _STEP_TOL,
        loss_lo=lo.best_loss,
        loss_hi=hi.best_loss,
        wider_better=hi.best_loss < lo.best_loss - tolerance,
    )


def _drift_std(
    seeds_lo: Sequence[float],
    seeds_hi: Sequence[float],
    std_lo: float | None,
    std_hi: float | None,
    doublings: float,
    step: float,
) -> float | None:
    # Same seed index means same data order and init stream, so per-seed drifts are paired.
    if len(seeds_lo) == len(seeds_hi) >= 2:
        drifts = [grid_steps(b, a, step) / doublings for a, b in zip(seeds_lo, seeds_hi)]
        return float(np.std(drifts, ddof=1))
    if std_lo is None or std_hi is None:
        return None
    return math.hypot(std_lo, std_hi) / doublings


def _unresolved_reason(row: WidthRow, axis: Axis = "width") -> str:
    if math.isinf(row.best_loss):
        return f"every learning rate diverged at {axis} {row.width}: no optimum"
    return (
        f"optimum at {axis} {row.width} is unresolved: still on the {row.edge} edge of its line "
        f"(lr {row.optimum_lr:.3g}) after extensions"
    )


def _loss_reason(d: DoublingRow, tolerance: float) -> str:
    hi, lo = _distinct(d.loss_hi, d.loss_lo)
    margin = f" by more than {tolerance:g}" if tolerance > 0 else ""
    return f"loss at {d.width_hi} ({hi}) is not below loss at {d.width_lo} ({lo}){margin}"


def _pass_reasons(
    rows: Sequence[WidthRow], doublings: Sequence[DoublingRow], threshold: float, axis: Axis = "width"
) -> tuple[str, ...]:
    worst = max(doublings, key=lambda d: abs(d.drift_per_doubling))
    losses = " > ".join(f"{r.best_loss:.4g}" for r in rows)
    return (
        f"largest drift {worst.drift_per_doubling:+.2f} steps per doubling (between {worst.width_lo} and "
        f"{worst.width_hi}) is within {threshold:g}",
        f"{_BIGGER[axis]} is better: best loss {losses}",
    )


def _distinct(a: float, b: float) -> tuple[str, str]:
    """Format two numbers with just enough digits to tell them apart (at least 3)."""
    for digits in range(3, 10):
        fa, fb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if fa != fb:
            break
    return fa, fb


def _check_verdict_inputs(
    widths: Sequence[int],
    optima: Sequence[float],
    best_losses: Sequence[float],
    threshold: float,
    tolerance: float,
    step: float,
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    ws = tuple(int(w) for w in widths)
    lrs = tuple(float(v) for v in optima)
    losses = tuple(float(v) if math.isfinite(float(v)) else math.inf for v in best_losses)
    if len(ws) < 2:
        raise TelescopeError(f"a transfer check needs at least 2 widths, got {list(ws)}")
    if len(lrs) != len(ws) or len(losses) != len(ws):
        raise TelescopeError(
            f"need one optimum and one best loss per width: {len(ws)} widths, {len(lrs)} optima, {len(losses)} losses"
        )
    if ws[0] <= 0 or any(b <= a for a, b in zip(ws, ws[1:])):
        raise TelescopeError(f"widths must be positive and strictly increasing, got {list(ws)}")
    for lr in lrs:
        _check_positive("optimum learning rate", lr)
    if not (threshold > 0 and math.isfinite(threshold)):
        raise TelescopeError(f"drift threshold must be a positive number of grid steps, got {threshold}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise TelescopeError(f"loss tolerance must be >= 0, got {tolerance}")
    _check_step(step)
    return ws, lrs, losses


def _check_positive(what: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise TelescopeError(f"{what} must be positive and finite, got {value}")


def _check_step(step: float) -> None:
    if not (math.isfinite(step) and step > 1):
        raise TelescopeError(f"grid step factor must be > 1, got {step}")
