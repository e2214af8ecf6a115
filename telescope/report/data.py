"""The data behind every figure, pulled from the sweep database as plain values.

`load_sweep(db, name)` reads a finished sweep once; the functions below turn it into
exactly the points each figure draws, so tests can compare them with the database rows.
Diverged and failed trials stay in the data with their status: a figure shows them,
it never drops them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

from telescope.config import SweepConfig, parse_config
from telescope.results import SweepResult, finished_sweep
from telescope.search import Axis, AxisDrift
from telescope.spec import SWEEPABLE, Status
from telescope.storage.database import Database
from telescope.storage.rows import LevelRow, TrialRow

# Float columns are compared with this relative tolerance: the trial values and the level
# grid are written from the same floats, so in practice they are equal.
_REL_TOL = 1e-9


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial: its hyperparameters, status and objective (None unless completed)."""

    key: str
    level: int
    width: int
    values: dict[str, float]  # every SWEEPABLE hyperparameter
    seed: int
    status: Status
    loss: float | None


@dataclass(frozen=True)
class LevelData:
    level: int
    width: int
    grid: list[dict[str, float]]  # the level's planned points (swept hyperparameters only)
    best: dict[str, float] | None
    best_loss: float | None
    warnings: list[str]
    trials: tuple[TrialPoint, ...]


@dataclass(frozen=True)
class SweepData:
    """A finished sweep as the figures and the report need it."""

    name: str
    config: SweepConfig
    result: SweepResult
    levels: tuple[LevelData, ...]

    @property
    def objective(self) -> str:
        return self.config.objective

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.config.search.axes

    @property
    def swept(self) -> tuple[str, ...]:
        return self.config.search.names()

    @property
    def target_width(self) -> int:
        return self.result.target_width

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)


def load_sweep(db: Database, name: str) -> SweepData:
    """Read a finished sweep: config, stored result, levels and every trial."""
    row, result = finished_sweep(db, name)
    config = parse_config(row.config)
    trials_by_level: dict[int, list[TrialPoint]] = {}
    for t in db.trials(name):
        if t.finished:
            trials_by_level.setdefault(t.level, []).append(_trial_point(t, config.objective))
    levels = tuple(_level_data(lv, trials_by_level.get(lv.level, [])) for lv in db.levels(name))
    return SweepData(name=name, config=config, result=result, levels=levels)


def _trial_point(t: TrialRow, objective: str) -> TrialPoint:
    loss = t.val_loss if objective == "val_loss" else t.train_loss
    if t.status is not Status.COMPLETED or loss is None or not math.isfinite(loss):
        loss = None
    values = {name: float(getattr(t, name)) for name in SWEEPABLE}
    return TrialPoint(t.key, t.level, t.width, values, t.seed, t.status, loss)


def _level_data(lv: LevelRow, trials: list[TrialPoint]) -> LevelData:
    return LevelData(
        level=lv.level,
        width=lv.width,
        grid=[{k: float(v) for k, v in p.items()} for p in lv.grid],
        best=lv.best,
        best_loss=lv.best_loss,
        warnings=lv.warnings,
        trials=tuple(trials),
    )


def same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=0.0)


def grid_shape(level: LevelData, names: tuple[str, ...]) -> str:
    """E.g. "5x5": distinct values per swept hyperparameter on the level's grid."""
    counts = []
    for name in names:
        distinct: list[float] = []
        for p in level.grid:
            if name in p and not any(same(p[name], d) for d in distinct):
                distinct.append(p[name])
        counts.append(len(distinct))
    return "x".join(map(str, counts))


# --------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class Cell:
    """One grid point with its seeds merged as the search merges them: failed seeds are
    excluded, a diverged seed makes the point diverged, else the mean loss."""

    values: dict[str, float]
    status: Status  # completed, diverged or failed (every seed failed)
    loss: float | None  # mean over completed seeds; None unless completed
    trials: tuple[TrialPoint, ...]


def merge_seeds(trials: tuple[TrialPoint, ...] | list[TrialPoint], names: tuple[str, ...]) -> list[Cell]:
    """Group trials by their values of `names` (seeds of one point), keeping first-seen order."""
    groups: list[list[TrialPoint]] = []
    for t in trials:
        for g in groups:
            if all(same(g[0].values[n], t.values[n]) for n in names):
                g.append(t)
                break
        else:
            groups.append([t])
    cells = []
    for g in groups:
        counted = [t for t in g if t.status is not Status.FAILED]
        if not counted:
            status, loss = Status.FAILED, None
        elif any(t.status is Status.DIVERGED or t.loss is None for t in counted):
            status, loss = Status.DIVERGED, None
        else:
            status, loss = Status.COMPLETED, sum(t.loss for t in counted) / len(counted)  # type: ignore[misc]
        cells.append(Cell({n: g[0].values[n] for n in names}, status, loss, tuple(g)))
    return cells


# --------------------------------------------------------------------------- figure 1: loss vs lr


@dataclass(frozen=True)
class Curve:
    """Loss against one hyperparameter at one width, the others held at that level's best."""

    level: int
    width: int
    axis: str
    held: dict[str, float]  # the other swept hyperparameters, at the level's best
    trials: tuple[TrialPoint, ...]  # every trial on the curve, sorted by the axis value
    best: dict[str, float] | None

    def cells(self) -> list[Cell]:
        return merge_seeds(self.trials, (self.axis,))


def transfer_axis(data: SweepData) -> str:
    """The hyperparameter the transfer picture is drawn against: lr when it is swept."""
    return "lr" if "lr" in data.swept else data.swept[0]


def curves(data: SweepData, axis: str) -> list[Curve]:
    """One curve per level (= per width): the trials whose other swept hyperparameters equal
    that level's best point."""
    out = []
    for lv in data.levels:
        if lv.best is None:
            continue
        held = {n: lv.best[n] for n in data.swept if n != axis and n in lv.best}
        on_curve = [t for t in lv.trials if all(same(t.values[n], v) for n, v in held.items())]
        on_curve.sort(key=lambda t: (t.values[axis], t.seed))
        out.append(Curve(lv.level, lv.width, axis, held, tuple(on_curve), lv.best))
    return out


# --------------------------------------------------------------------------- figure 2: per-level grids


@dataclass(frozen=True)
class LevelMap:
    """One level's sub-grid over two hyperparameters (others at the level's best)."""

    level: int
    width: int
    x: str
    y: str
    held: dict[str, float]
    cells: tuple[Cell, ...]
    best: dict[str, float] | None
    x_spacing: float  # natural-log distance between neighbouring grid values (cell size)
    y_spacing: float


def map_axes(data: SweepData) -> tuple[str, str] | None:
    """The two hyperparameters of the heatmaps (lr and weight decay when both are swept),
    or None when only one is swept."""
    if len(data.swept) < 2:
        return None
    preferred = [n for n in ("lr", "weight_decay") if n in data.swept]
    rest = [n for n in data.swept if n not in preferred]
    x, y = (preferred + rest)[:2]
    return x, y


def level_maps(data: SweepData) -> list[LevelMap]:
    """Every level's sub-grid as cells; raises ValueError with a single swept hyperparameter."""
    pair = map_axes(data)
    if pair is None:
        raise ValueError("level maps need two swept hyperparameters")
    x, y = pair
    out = []
    spacing = {n: _initial_spacing(data.axis(n)) for n in pair}
    for lv in data.levels:
        held = {n: lv.best[n] for n in data.swept if n not in pair and lv.best and n in lv.best}
        trials = [t for t in lv.trials if all(same(t.values[n], v) for n, v in held.items())]
        for n in pair:
            # a single value on this level (a 1-wide grid) keeps the previous cell size halved
            spacing[n] = _spacing([p[n] for p in lv.grid]) or spacing[n] / 2
        out.append(
            LevelMap(lv.level, lv.width, x, y, held, tuple(merge_seeds(trials, pair)), lv.best, spacing[x], spacing[y])
        )
    return out


def _initial_spacing(axis: Axis) -> float:
    return math.log(axis.hi / axis.lo) / max(axis.points - 1, 1)


def _spacing(values: list[float]) -> float | None:
    logs = sorted({round(math.log(v), 12) for v in values})
    gaps = [b - a for a, b in zip(logs, logs[1:])]
    return min(gaps) if gaps else None


# --------------------------------------------------------------------------- figure 3: loss vs width


_MIN_EXPONENT, _MAX_EXPONENT = 1e-3, 10.0  # a fit pinned at either bound is no power law


@dataclass(frozen=True)
class PowerLaw:
    """L(d) = A / d^a + E."""

    A: float
    a: float
    E: float

    def __call__(self, d: float) -> float:
        return self.A / d**self.a + self.E


def best_losses(data: SweepData) -> list[tuple[int, float]]:
    """(width, best loss) of every level that has a finite best loss."""
    return [(lv.width, lv.best_loss) for lv in data.levels if lv.best_loss is not None]


def fit_power_law(widths: list[int], losses: list[float]) -> PowerLaw:
    """Least-squares fit of L(d) = A/d^a + E (scipy curve_fit). Needs >= 3 distinct widths;
    raises ValueError when there are fewer or the fit does not converge."""
    if len(set(widths)) < 3:
        raise ValueError(f"a power-law fit needs 3 widths, this sweep has {len(set(widths))}")
    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    d0 = float(min(widths))
    x = np.asarray(widths, dtype=float) / d0  # fit on d/d0 so A starts near the loss scale
    y = np.asarray(losses, dtype=float)

    def law(u, A, a, E):
        return A / u**a + E

    spread = float(y.max() - y.min()) or 1.0
    p0 = (spread, 0.5, float(y.min()) - spread / 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # 3 points: no covariance, as expected
            (A, a, E), _ = curve_fit(
                law, x, y, p0=p0, bounds=([-np.inf, 0.0, -np.inf], [np.inf, _MAX_EXPONENT, np.inf]), maxfev=20000
            )
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"the power-law fit did not converge ({e})") from None
    if not (_MIN_EXPONENT < a < _MAX_EXPONENT) or E < 0:
        # e.g. losses that fall faster at larger widths (too few steps): a pinned at its bound
        raise ValueError(f"the best losses do not follow a power law in width (fit a={a:.3g}, E={E:.3g})")
    return PowerLaw(A=float(A) * d0 ** float(a), a=float(a), E=float(E))


# --------------------------------------------------------------------------- figure 4: drift


@dataclass(frozen=True)
class DriftSeries:
    """Per-level optima of one hyperparameter and, with >= 2 widths, the stored drift fit
    log x*(n) = log x_inf - alpha/n."""

    name: str
    optima: tuple[tuple[int, float], ...]  # (width, best value) per level
    fit: AxisDrift | None  # the sweep's drift fit for this hyperparameter
    target_width: int

    def fitted(self) -> Callable[[float], float] | None:
        if self.fit is None:
            return None
        return self.fit.at_inverse_width


def drift_series(data: SweepData) -> list[DriftSeries]:
    out = []
    for name in data.swept:
        optima = tuple((lv.width, lv.best[name]) for lv in data.levels if lv.best and name in lv.best)
        out.append(DriftSeries(name, optima, data.result.drift_of(name), data.target_width))
    return out


# --------------------------------------------------------------------------- everything


@dataclass(frozen=True)
class FigureData:
    """The data of the four figures, computed once."""

    transfer: list[Curve]
    maps: list[LevelMap] | None  # None with a single swept hyperparameter
    lines: list[Curve] | None  # per-level lines instead of maps
    widths: list[tuple[int, float]]
    power_law: PowerLaw | None
    power_law_note: str | None  # why there is no fit
    drift: list[DriftSeries] = field(default_factory=list)


def figure_data(data: SweepData) -> FigureData:
    widths = best_losses(data)
    law, note = None, None
    try:
        law = fit_power_law([w for w, _ in widths], [loss for _, loss in widths])
    except ValueError as e:
        note = str(e)
    two = map_axes(data) is not None
    return FigureData(
        transfer=curves(data, transfer_axis(data)),
        maps=level_maps(data) if two else None,
        lines=None if two else curves(data, data.swept[0]),
        widths=widths,
        power_law=law,
        power_law_note=note,
        drift=drift_series(data),
    )
