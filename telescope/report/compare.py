"""`telescope compare`: finished sweeps side by side, as a table of their answers and a figure
of loss against learning rate per width, one panel per sweep on one loss scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telescope import readable
from telescope.errors import TelescopeError
from telescope.export import export_sweep
from telescope.plotting import new_figure
from telescope.report.data import SweepData, curves, load_sweep, transfer_axis
from telescope.report.plots import _draw_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from telescope.storage.database import Database


@dataclass(frozen=True)
class Compared:
    data: SweepData
    export: dict[str, Any]  # telescope.export.export_sweep's payload: the answer and its recommendation


def load_compared(db: Database, names: list[str]) -> list[Compared]:
    """Each named sweep, finished (TelescopeError for fewer than two names, a repeated name,
    or a sweep that is missing or unfinished)."""
    if len(names) < 2:
        raise TelescopeError("compare needs at least two sweeps")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TelescopeError(f"sweep {repeated[0]!r} is named twice")
    return [Compared(load_sweep(db, name), export_sweep(db, name)) for name in names]


def answer_rows(sweeps: list[Compared]) -> list[dict[str, Any]]:
    """One row per quantity, one column per sweep: what each sweep was and what it answers."""
    names = [s.data.name for s in sweeps]
    swept = list(dict.fromkeys(n for s in sweeps for n in s.data.swept))

    def row(quantity: str, values: list[Any]) -> dict[str, Any]:
        return {"quantity": quantity, **dict(zip(names, values))}

    rows = [
        row("parametrization", [s.data.config.parametrization for s in sweeps]),
        row("widths", [" -> ".join(str(lv.width) for lv in s.data.levels) for s in sweeps]),
        row("trials", [sum(len(lv.trials) for lv in s.data.levels) for s in sweeps]),
        row("best loss", [readable.loss(s.data.result.best_loss) for s in sweeps]),
    ]
    for name in swept:
        rows.append(row(f"{name} chosen", [_value(s.data.result.best.get(name)) for s in sweeps]))
        rows.append(row(f"{name} at target", [_value(s.export["extrapolated"].get(name)) for s in sweeps]))
        rows.append(row(f"{name} to use", [_value(s.export["recommendation"]["values"].get(name)) for s in sweeps]))
    rows.append(row("target width", [s.export["target_width"] for s in sweeps]))
    return rows


def _value(x: float | None) -> str:
    return "-" if x is None else readable.value(x)


def draw_comparison(sweeps: list[Compared]) -> Figure:
    """Loss against learning rate, one curve per width, one panel per sweep, one loss axis."""
    fig, axes = new_figure(ncols=len(sweeps), width=5.2, height=4.4, sharey=True)
    for ax, s in zip(axes, sweeps):
        shown = curves(s.data, transfer_axis(s.data))
        if shown:
            _draw_curves(ax, shown, s.data.objective)
        ax.set_title(
            f"{s.data.name} ({s.data.config.parametrization}): best {readable.loss(s.data.result.best_loss)}",
            fontsize="medium",
        )
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle("loss against learning rate per width (star: each level's best)")
    return fig
