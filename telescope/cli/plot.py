"""`telescope plot SWEEP`: the four figures of a finished sweep, as PNG (and SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import DbOption, console


def plot(
    sweep: Annotated[str, typer.Argument(help="A finished sweep's name.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the figures. Default: ./SWEEP-plots.")
    ] = None,
    svg: Annotated[bool, typer.Option("--svg", help="Also write each figure as SVG.")] = False,
    db: DbOption = None,
) -> None:
    """Loss vs learning rate per width, each level's grid, best loss vs width, optimum drift."""
    from telescope.report.plots import plot_sweep
    from telescope.storage.database import Database

    with Database(db, create=False) as database:
        paths = plot_sweep(database, sweep, output if output is not None else Path(f"{sweep}-plots"), svg=svg)
    for path in paths:
        console.print(str(path), highlight=False, soft_wrap=True)
