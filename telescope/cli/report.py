"""`telescope report SWEEP`: one Markdown file explaining a finished sweep, figures included."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import DbOption, console


def report(
    sweep: Annotated[str, typer.Argument(help="A finished sweep's name.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Report file (.md). Default: ./SWEEP-report.md.")
    ] = None,
    svg: Annotated[bool, typer.Option("--svg", help="Also write each figure as SVG.")] = False,
    db: DbOption = None,
) -> None:
    """Plan, per-level table, chosen values and drift, warnings, cost against the plan, figures."""
    from telescope.report.markdown import write_report
    from telescope.storage.database import Database

    with Database(db, create=False) as database:
        path = write_report(database, sweep, output, svg=svg)
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)
