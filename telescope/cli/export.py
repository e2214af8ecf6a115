"""`telescope export SWEEP`: the transferred hyperparameters as JSON, YAML or TOML."""

from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import DbOption, console


class ExportFormat(str, enum.Enum):
    json = "json"
    yaml = "yaml"
    toml = "toml"


def export(
    sweep: Annotated[str, typer.Argument(help="A finished sweep's name.")],
    target_width: Annotated[int | None, typer.Option("--target-width", min=1, help="Default: the config's target width.")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="json, yaml or toml.")] = ExportFormat.json,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    db: DbOption = None,
) -> None:
    """Base values, fingerprint, provenance and the absolute values of every parameter group."""
    from telescope.export import export_sweep, render
    from telescope.storage.database import Database

    with Database(db, create=False) as database:
        text = render(export_sweep(database, sweep, target_width), fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, output)
    console.print(f"wrote {output}", highlight=False)
