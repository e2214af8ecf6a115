"""`telescope compare SWEEP_A SWEEP_B ...`: finished sweeps side by side, table and figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import DbOption, FormatOption, OutputFormat, WideOption, console, print_rows
from telescope.errors import TelescopeError
from telescope.files import atomic_write


def compare(
    sweeps: Annotated[list[str], typer.Argument(help="Two or more finished sweeps.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also draw loss against LR per width for each sweep to this PNG."),
    ] = None,
    db: DbOption = None,
    fmt: FormatOption = OutputFormat.table,
    wide: WideOption = False,
) -> None:
    """Compare sweeps (two parametrizations, two data sets, a sweep and its extension): their
    answers side by side, and with -o a figure of each one's loss against learning rate per width."""
    from telescope.report.compare import answer_rows, draw_comparison, load_compared
    from telescope.storage.database import Database

    if output is not None:
        _check_png(output)
    with Database(db, create=False) as database:
        compared = load_compared(database, sweeps)
    print_rows(answer_rows(compared), fmt, title="sweeps compared", wide=wide)
    if output is not None:
        with atomic_write(output) as f:
            draw_comparison(compared).savefig(f, format="png", dpi=110)
        console.print(f"wrote {output}", highlight=False, soft_wrap=True)


def _check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise TelescopeError(f"-o {path}: the file name must end in .png")
    if not path.parent.is_dir():
        raise TelescopeError(f"-o {path}: folder {path.parent} does not exist")
