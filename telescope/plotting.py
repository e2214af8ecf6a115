"""What every figure shares: a pyplot-free Agg figure with constrained layout, log axes with
readable ticks, and a linear axis where the values span too little for a log one."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

# Values whose largest is less than this many times their smallest read better on a linear
# axis: a log axis over 0.786..0.79 only magnifies noise.
NARROW_RATIO = 3.0


def new_figure(
    ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.4, **kwargs
) -> tuple[Figure, list[Axes]]:
    """A figure (constrained layout: titles, labels and legends are never clipped) and its
    axes, flattened row by row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, [ax for row in axes for ax in row]


def readable_log_ticks(axis: Axis, max_ticks: int = 6) -> None:
    """A log axis labelled with plain numbers (0.01, 0.034), at most `max_ticks` of them and
    no labelled minor ticks, so that labels never overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=max_ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def fitting_scale(values: Iterable[float]) -> str:
    """`log` for positive values spanning at least NARROW_RATIO, else `linear`."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0 or max(finite) / min(finite) < NARROW_RATIO:
        return "linear"
    return "log"


def wrapped(text: str, width: int = 70) -> str:
    """`text` broken into lines of at most `width` characters, for a title or a note."""
    return "\n".join(textwrap.wrap(text, width))
