"""The four figures of a finished sweep (matplotlib, Agg, no pyplot state).

Each `draw_*` function takes the plain data of `telescope.report.data` and returns a
Figure; `write_figures` saves them. Diverged trials are drawn as red crosses at the top
of the axis (hatched cells in heatmaps) and failed ones as grey squares, never dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from telescope.errors import TelescopeError
from telescope.files import atomic_write, cannot_write
from telescope.plotting import fitting_scale, new_figure, readable_log_ticks, wrapped
from telescope.report.data import Curve, DriftSeries, FigureData, LevelMap, PowerLaw, SweepData, figure_data
from telescope.spec import Status

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from telescope.storage.database import Database

DIVERGED_STYLE = dict(marker="x", color="tab:red", linestyle="none", markersize=8, mew=2)
FAILED_STYLE = dict(marker="s", color="0.55", linestyle="none", markersize=6, fillstyle="none", mew=1.5)
_LABEL_BOX = dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85)  # text over hatching
# Where off-scale trials sit, in axes coordinates (fraction of the height).
DIVERGED_Y, FAILED_Y = 0.96, 0.90


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file stem
    title: str


FIGURES = (
    FigureSpec("loss-vs-lr", "Loss against learning rate, one curve per width"),
    FigureSpec("level-grids", "Each level's sub-grid and its best point"),
    FigureSpec("loss-vs-width", "Best loss against width, power-law fit"),
    FigureSpec("drift", "Per-level optimum against 1/width, drift fit and extrapolation"),
)


# --------------------------------------------------------------------------- helpers


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _mark_off_scale(ax: Axes, xs_diverged: Sequence[float], xs_failed: Sequence[float]) -> None:
    """Crosses (diverged) and squares (failed) along the top of the axis at their x."""
    transform = ax.get_xaxis_transform()  # x in data, y in axes fraction
    if xs_diverged:
        ax.plot(xs_diverged, [DIVERGED_Y] * len(xs_diverged), transform=transform, clip_on=False, **DIVERGED_STYLE)
    if xs_failed:
        ax.plot(xs_failed, [FAILED_Y] * len(xs_failed), transform=transform, clip_on=False, **FAILED_STYLE)


def _status_legend(ax: Axes, diverged: bool, failed: bool) -> list:
    from matplotlib.lines import Line2D

    handles = []
    if diverged:
        handles.append(Line2D([], [], label="diverged", **DIVERGED_STYLE))
    if failed:
        handles.append(Line2D([], [], label="failed", **FAILED_STYLE))
    return handles


def _pretty(name: str) -> str:
    return {
        "lr": "learning rate (eta0)",
        "weight_decay": "weight decay (lambda)",
        "muon_lr_ratio": "Muon:AdamW LR ratio",
    }.get(name, name)


def _held_text(held: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in held.items())


# --------------------------------------------------------------------------- figure 1 and the 1-D fallback


def _draw_curves(ax: Axes, curves: list[Curve], objective: str) -> None:
    colours = _colours(len(curves))
    any_diverged = any_failed = False
    for curve, colour in zip(curves, colours):
        cells = curve.cells()
        done = [c for c in cells if c.status is Status.COMPLETED]
        label = f"width {curve.width}" + (f" ({_held_text(curve.held)})" if curve.held else "")
        ax.plot([c.values[curve.axis] for c in done], [c.loss for c in done], "o-", color=colour, label=label)
        if curve.best and curve.axis in curve.best:
            best = next(
                (c for c in done if math.isclose(c.values[curve.axis], curve.best[curve.axis], rel_tol=1e-9)), None
            )
            if best is not None:
                ax.plot(
                    [best.values[curve.axis]],
                    [best.loss],
                    marker="*",
                    markersize=16,
                    color=colour,
                    mec="black",
                    linestyle="none",
                    zorder=5,
                )
        diverged = [c.values[curve.axis] for c in cells if c.status is Status.DIVERGED]
        failed = [c.values[curve.axis] for c in cells if c.status is Status.FAILED]
        _mark_off_scale(ax, diverged, failed)
        any_diverged |= bool(diverged)
        any_failed |= bool(failed)
    if any_diverged or any_failed:  # a band along the top for their marks, above every point
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, lo + (hi - lo) / min(DIVERGED_Y, FAILED_Y) * 1.08)
    ax.set_xscale("log")
    readable_log_ticks(ax.xaxis)
    ax.set_xlabel(_pretty(curves[0].axis) if curves else "")
    ax.set_ylabel(objective)
    ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    extra = [
        Line2D(
            [],
            [],
            marker="*",
            markersize=12,
            color="white",
            mec="black",
            linestyle="none",
            label="best (level optimum)",
        )
    ]
    extra += _status_legend(ax, any_diverged, any_failed)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize="small")


def draw_transfer(curves: list[Curve], objective: str, sweep: str = "") -> Figure:
    """Loss against learning rate (log x), one curve per width at its best weight decay."""
    fig, (ax,) = new_figure()
    if curves:
        _draw_curves(ax, curves, objective)
    ax.set_title(f"{sweep}: {objective} vs {curves[0].axis if curves else 'lr'} per width (muP transfer)")
    return fig


def draw_level_lines(curves: list[Curve], objective: str, sweep: str = "") -> Figure:
    """With a single swept hyperparameter: one panel per level, loss against it."""
    fig, axes = new_figure(ncols=len(curves) or 1, width=4.2, sharex=True, sharey=True)
    for ax, curve in zip(axes, curves):
        _draw_curves(ax, [curve], objective)
        ax.set_title(f"level {curve.level}, width {curve.width}")
    fig.suptitle(f"{sweep}: each level's points")
    return fig


# --------------------------------------------------------------------------- figure 2


def draw_level_maps(maps: list[LevelMap], objective: str, sweep: str = "") -> Figure:
    """One heatmap per level over (x, y) in log space, each zoomed to its own sub-grid with its
    own colour scale (levels differ in loss by more than one level's cells do), the loss
    printed in every cell; hatched red cells diverged, grey failed, a star at the best point."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch, Rectangle

    fig, axes = new_figure(ncols=len(maps) or 1, width=4.2, height=4.6)
    cmap = colormaps["viridis_r"]
    for ax, m in zip(axes, maps):
        losses = [c.loss for c in m.cells if c.loss is not None]
        norm = Normalize(min(losses), max(losses)) if losses else Normalize(0.0, 1.0)
        lift = math.exp(m.y_spacing * 0.25)  # the best cell: star above the centre, loss below
        for c in m.cells:
            box = dict(zip(("xy", "width", "height"), _cell_box(m, c.values)), linewidth=0.8, edgecolor="white")
            x, y = c.values[m.x], c.values[m.y]
            is_best = bool(m.best) and all(math.isclose(c.values[n], m.best[n], rel_tol=1e-9) for n in (m.x, m.y))
            text_y = y / lift if is_best else y
            if c.status is Status.COMPLETED:
                ax.add_patch(Rectangle(facecolor=cmap(norm(c.loss)), **box))
                ax.text(
                    x,
                    text_y,
                    f"{c.loss:.4f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm(c.loss) > 0.6 else "black",
                )
            elif c.status is Status.DIVERGED:
                ax.add_patch(Rectangle(facecolor="mistyrose", hatch="xx", **dict(box, edgecolor="tab:red")))
                ax.text(x, text_y, "diverged", ha="center", va="center", fontsize=7, color="tab:red", bbox=_LABEL_BOX)
            else:
                ax.add_patch(Rectangle(facecolor="0.85", hatch="//", **dict(box, edgecolor="0.5")))
                ax.text(x, text_y, "failed", ha="center", va="center", fontsize=7, color="0.2", bbox=_LABEL_BOX)
            if is_best:
                ax.plot(
                    [x], [y * lift], marker="*", markersize=13, color="white", mec="black", linestyle="none", zorder=5
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        if m.cells:
            (x0, y0), (x1, y1) = _extent(m)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
        for axis, name in ((ax.xaxis, m.x), (ax.yaxis, m.y)):
            ticks = sorted({c.values[name] for c in m.cells})
            axis.set_ticks(
                ticks, [f"{v:.3g}" for v in ticks], rotation=30 if axis is ax.xaxis and len(ticks) > 4 else 0
            )
            axis.set_ticks([], minor=True)
        ax.set_xlabel(_pretty(m.x))
        ax.set_ylabel(_pretty(m.y))
        ax.set_title(
            f"level {m.level}, width {m.width}" + (f"\n{_held_text(m.held)}" if m.held else ""), fontsize="medium"
        )
        if len(set(losses)) > 1:  # one loss has no range to show
            bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, location="bottom", shrink=0.9, aspect=30)
            bar.set_label(f"{objective} (this level's range)", fontsize="small")
            bar.ax.tick_params(labelsize=7)
    statuses = {c.status for m in maps for c in m.cells}
    handles = []
    if Status.DIVERGED in statuses:
        handles.append(Patch(facecolor="mistyrose", hatch="xx", edgecolor="tab:red", label="diverged"))
    if Status.FAILED in statuses:
        handles.append(Patch(facecolor="0.85", hatch="//", edgecolor="0.5", label="failed"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    fig.suptitle(f"{sweep}: {objective} on each level's sub-grid (star: best; colours per level)")
    return fig


def _cell_box(m: LevelMap, values: dict[str, float]) -> tuple[tuple[float, float], float, float]:
    """(corner, width, height) of a grid cell: one grid spacing wide, centred in log space."""
    hx, hy = math.exp(m.x_spacing / 2), math.exp(m.y_spacing / 2)
    x, y = values[m.x], values[m.y]
    return (x / hx, y / hy), x * hx - x / hx, y * hy - y / hy


def _extent(m: LevelMap) -> tuple[tuple[float, float], tuple[float, float]]:
    """Lower-left and upper-right corners of all of a level's cells."""
    boxes = [_cell_box(m, c.values) for c in m.cells]
    return (
        (min(b[0][0] for b in boxes), min(b[0][1] for b in boxes)),
        (max(b[0][0] + b[1] for b in boxes), max(b[0][1] + b[2] for b in boxes)),
    )


# --------------------------------------------------------------------------- figure 3


def draw_loss_vs_width(
    points: list[tuple[int, float]], law: PowerLaw | None, note: str | None, objective: str, sweep: str = ""
) -> Figure:
    """Best loss per width and the fitted L(d) = A/d^a + E (or a note why there is no fit)."""
    import numpy as np

    fig, (ax,) = new_figure()
    widths = [w for w, _ in points]
    ax.plot(
        widths, [loss for _, loss in points], "o", color="tab:blue", markersize=8, label="best loss per level", zorder=3
    )
    if law is not None and widths:
        d = np.geomspace(min(widths) / 1.5, max(widths) * 1.5, 100)
        ax.plot(
            d, [law(x) for x in d], "-", color="tab:orange", label=f"L(d) = {law.A:.3g}/d^{law.a:.3g} + {law.E:.3g}"
        )
        ax.axhline(law.E, color="tab:orange", linestyle=":", linewidth=1, label=f"E = {law.E:.3g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("width d")
    ax.set_ylabel(f"best {objective}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    title = f"{sweep}: best {objective} against width"
    if law is None and note:  # said above the axes, where it covers no point
        ax.set_title(f"{title}\n" + wrapped(f"no fit: {note}", 80), fontsize="medium")
    else:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- figure 4


def draw_drift(series: list[DriftSeries], sweep: str = "") -> Figure:
    """Per hyperparameter: the level optima against 1/width, the fit x*(n) = x_inf*exp(-alpha/n)
    and its extrapolation to the target width (with the fit's standard error when known)."""
    import numpy as np

    fig, axes = new_figure(ncols=len(series) or 1, width=4.8)
    for ax, s in zip(axes, series):
        inv = [1.0 / w for w, _ in s.optima]
        ax.plot(inv, [v for _, v in s.optima], "o", color="tab:blue", markersize=8, label="level optimum", zorder=3)
        for (w, v), u in zip(s.optima, inv):
            ax.annotate(str(w), (u, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fitted = s.fitted()
        target = 1.0 / s.target_width
        if fitted is not None and inv:
            u = np.linspace(0.0, max(inv) * 1.1, 100)
            ax.plot(u, [fitted(x) for x in u], "-", color="tab:orange", label=f"fit: alpha={s.fit.alpha + 0.0:.3g}")
            at_target = s.fit.at_target
            se = s.fit.log_at_target_se
            yerr = None
            if se:
                yerr = [[at_target - at_target * math.exp(-se)], [at_target * math.exp(se) - at_target]]
            ax.errorbar(
                [target],
                [at_target],
                yerr=yerr,
                fmt="D",
                color="tab:red",
                capsize=4,
                label=f"target {s.target_width}: {at_target:.3g}",
            )
        else:
            ax.set_title("no drift fit: it needs 2 widths", fontsize="small", color="0.3")
        shown = [v for line in ax.get_lines() for v in line.get_ydata()] + _error_ends(s)
        ax.axvline(target, color="tab:red", linestyle=":", linewidth=1)
        if fitting_scale(shown) == "log":
            ax.set_yscale("log")
            ax.set_ylim(*_log_limits(shown))
            readable_log_ticks(ax.yaxis)
        else:  # a narrow range: a log axis would only magnify it
            ax.margins(y=0.15)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("1 / width")
        ax.set_ylabel(_pretty(s.name))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{sweep}: optimum drift, log x*(n) = log x_inf - alpha/n")
    return fig


def _error_ends(s: DriftSeries) -> list[float]:
    se = s.fit.log_at_target_se if s.fit else None
    return [s.fit.at_target * math.exp(-se), s.fit.at_target * math.exp(se)] if se else []


def _log_limits(values: list[float], pad: float = 1.3) -> tuple[float, float]:
    """Log-axis limits around positive values, at least a factor 2 tall (a flat optimum too)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return 0.1, 10.0
    lo, hi = min(finite) / pad, max(finite) * pad
    if hi / lo < 2.0:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(2.0), mid * math.sqrt(2.0)
    return lo, hi


# --------------------------------------------------------------------------- all four


def draw_figures(data: SweepData, figures: FigureData | None = None) -> dict[str, Figure]:
    """The four figures by name (see FIGURES), from a loaded sweep."""
    f = figures or figure_data(data)
    if f.maps is not None:
        grids = draw_level_maps(f.maps, data.objective, data.name)
    else:
        grids = draw_level_lines(f.lines or [], data.objective, data.name)
    return {
        "loss-vs-lr": draw_transfer(f.transfer, data.objective, data.name),
        "level-grids": grids,
        "loss-vs-width": draw_loss_vs_width(f.widths, f.power_law, f.power_law_note, data.objective, data.name),
        "drift": draw_drift(f.drift, data.name),
    }


def check_output_dir(path: Path) -> Path:
    """A folder the figures can go to: it exists, or its parent does (it is then created
    on writing). Raises TelescopeError otherwise; writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TelescopeError(f"output folder {path} is a file; pass a folder with -o")
    if not path.exists() and not path.parent.is_dir():
        raise TelescopeError(f"cannot write figures to {path}: folder {path.parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise TelescopeError(f"cannot write figures to {path}: permission denied")
    return path


def save_figures(figures: dict[str, Figure], out_dir: Path, svg: bool = False) -> dict[str, list[Path]]:
    """Save each figure as PNG (and SVG) under `out_dir`, each file written atomically."""
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    written: dict[str, list[Path]] = {}
    for name, fig in figures.items():
        written[name] = [_save(fig, out_dir / f"{name}.{ext}", ext) for ext in (("png", "svg") if svg else ("png",))]
    return written


def _save(fig: Figure, path: Path, fmt: str) -> Path:
    with atomic_write(path) as f:
        fig.savefig(f, format=fmt, dpi=110)
    return path


def plot_sweep(db: Database, sweep: str, out_dir: Path, svg: bool = False) -> list[Path]:
    """`telescope plot`: draw the four figures of a finished sweep into `out_dir`."""
    from telescope.report.data import load_sweep

    data = load_sweep(db, sweep)
    out_dir = check_output_dir(out_dir)
    written = save_figures(draw_figures(data), out_dir, svg)
    return [p for paths in written.values() for p in paths]
