"""What every command shares: the error table, output formats and option aliases."""

from __future__ import annotations

import csv
import enum
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from telescope.errors import TelescopeError

# No markup: sweep names, stored errors, SQL results and paths are printed as they are
# (`[/x]` or `[link=...]` in them is text, not a style). Styles are Text objects.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def styled(label: str, style: str, rest: str = "") -> Text:
    """`label` in `style`, then `rest` as plain text: the one way commands colour a line."""
    return Text.assemble((label, style), rest)


class ExecutorKind(str, enum.Enum):
    ray = "ray"
    local = "local"


class OutputFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format: table, csv or json.")
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: sqlite:///FILE, postgresql://..., or a path ending in .db, .sqlite or .sqlite3. Default: ./telescope.db.",
        envvar="TELESCOPE_DB",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Folder of the Parquet step metrics. Default: ./telescope-metrics.",
        envvar="TELESCOPE_STORE",
    ),
]


def trial_printer(objective: str) -> Callable[[str, Any], None]:
    """An `on_trial` callback printing one line per finished trial: count, key, status, loss."""
    done = [0]

    def on_trial(key: str, result: Any) -> None:
        done[0] += 1
        loss = result.val_loss if objective == "val_loss" else result.train_loss
        shown = f"{loss:.4f}" if loss is not None else "-"
        err_console.print(f"trial {done[0]} ({key}): {result.status.value} {shown}", highlight=False)

    return on_trial


ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Sweep your model: package.module:factory, factory(width) -> nn.Module (replaces the config's [model]).")
]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Role rules for your model (TOML or JSON), tried before the defaults.")
]


def load_sweep_config(path: Path, model: str | None = None, rules: Path | None = None) -> Any:
    """The sweep config at `path`, with --model and --rules applied (--rules needs a user
    model: --model, or the config's factory or hf_config)."""
    from telescope.config import parse_config, read_config_file
    from telescope.models.config import with_model

    data = read_config_file(path)
    if rules is None:
        return parse_config(with_model(data, model))
    named = model is not None or any(k in data.get("model", {}) for k in ("factory", "hf_config"))
    if not named:
        raise TelescopeError("--rules gives role rules for your model: pass --model, or name it in the config's [model]")
    from telescope.roles import load_rules

    return parse_config(with_model(data, model, load_rules(rules)))


def model_rules(path: Path | None, model: str | None) -> tuple[tuple[str, str], ...]:
    """The --rules file's rules for --model (none without the file); --rules needs --model."""
    if path is None:
        return ()
    if model is None:
        raise TelescopeError("--rules gives role rules for --model: pass --model too")
    from telescope.roles import load_rules

    return load_rules(path)


class TelescopeGroup(TyperGroup):
    """Turns user-input errors raised anywhere below a command into one line and exit 2."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except TelescopeError as e:
            err_console.print(styled("error:", "bold red", f" {e}"), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def print_rows(
    rows: Iterable[dict[str, Any]],
    fmt: OutputFormat = OutputFormat.table,
    columns: list[str] | None = None,
    title: str | None = None,
) -> None:
    """Print rows (dicts) as a rich table, CSV or JSON; the one output path for row data."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    if fmt is OutputFormat.json:
        json.dump([{c: _plain(r.get(c)) for c in columns} for r in rows], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([_plain(r.get(c)) for c in columns] for r in rows)
    else:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*(_cell(r.get(c)) for c in columns))
        console.print(table)
