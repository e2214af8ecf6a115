"""The transfer check's picture: loss against learning rate, one curve per width (or depth), optima marked."""

from __future__ import annotations

import math
from pathlib import Path

from telescope.errors import TelescopeError
from telescope.files import atomic_write
from telescope.plotting import new_figure, readable_log_ticks


def check_plot_path(path: str | Path) -> Path:
    """A PNG path whose folder exists; TelescopeError before any trial runs otherwise."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise TelescopeError(f"--plot {path}: the file name must end in .png")
    if not path.parent.is_dir():
        raise TelescopeError(f"--plot {path}: folder {path.parent} does not exist")
    return path


def plot_transfer_check(result, path: str | Path) -> Path:
    """Draw `result` (a CheckResult) to `path`: seed-mean loss vs lr per width or depth (log
    lr), diverged points left out, each one's located optimum as a star."""
    from matplotlib import colormaps

    path = check_plot_path(path)
    fig, (ax,) = new_figure(height=4.2)
    cmap = colormaps["viridis"]
    widths = list(result.curves)
    for i, width in enumerate(widths):
        color = cmap(i / max(1, len(widths) - 1) * 0.85)
        points = [(lr, loss) for lr, loss in result.curves[width] if math.isfinite(loss)]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, color=color, label=f"{result.settings.axis} {width}")
        row = result.verdict.widths[i]
        if math.isfinite(row.best_loss):
            ax.plot([row.optimum_lr], [row.best_loss], marker="*", ms=13, color=color, mec="black", mew=0.6)
    ax.set_xscale("log")
    readable_log_ticks(ax.xaxis)
    ax.set_xlabel("base learning rate eta0")
    ax.set_ylabel(result.settings.objective)
    worst = max(result.verdict.doublings, key=lambda d: abs(d.drift_per_doubling))
    s = result.settings
    across = f" across depth (width {s.widths[0]}, depth_alpha {s.model.depth_alpha:g})" if s.depths else ""
    ax.set_title(
        f"transfer check {s.parametrization}{across}: {result.verdict.label}\n"
        f"drift {worst.drift_per_doubling:+.2f} grid steps per doubling (limit {result.verdict.threshold_steps:g})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    return path
