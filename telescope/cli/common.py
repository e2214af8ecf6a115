"""What every command shares: the error table, output formats and option aliases."""

from __future__ import annotations

import csv
import enum
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Sequence

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from telescope.cli.tables import print_table
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


FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format: table, csv or json.")]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: sqlite:///FILE, postgresql://..., or a path ending in .db, .sqlite or .sqlite3. Default: "
        "./telescope.db.",
        envvar="TELESCOPE_DB",
    ),
]
DEFAULT_RETRY_SECONDS = 120.0  # telescope.storage.retry's, repeated so `--help` needs no database driver
DbRetryOption = Annotated[
    float,
    typer.Option(
        "--db-retry-seconds",
        help="How long to wait for a database that is unavailable (restarting, failing over) before stopping.",
    ),
]
NewOption = Annotated[bool, typer.Option("--new", help="Start a new run under the next free name if this one exists.")]
NoReuseOption = Annotated[
    bool,
    typer.Option(
        "--no-reuse", help="Train every trial, even one a trial trained before (same content) could stand in for."
    ),
]
WideOption = Annotated[bool, typer.Option("--wide", help="Every column at full width, even past the terminal's edge.")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Folder of the Parquet step metrics. Default: ./telescope-metrics.",
        envvar="TELESCOPE_STORE",
    ),
]


def positive_number(value: float, option: str) -> float:
    """`value` if it is a finite number above 0; else one line naming `option`."""
    if not (math.isfinite(value) and value > 0):
        raise TelescopeError(f"{option} must be a finite number above 0, got {value}")
    return value


def open_database(db: str | None, retry_seconds: float) -> Any:
    """The Database a command writes to, waiting up to `retry_seconds` for it while it is
    unavailable, and saying so in the live view."""
    from telescope.progress import database_waiting
    from telescope.storage.database import Database

    if not (math.isfinite(retry_seconds) and retry_seconds >= 0):
        raise TelescopeError(f"invalid --db-retry-seconds {retry_seconds}: it must be a number of seconds, 0 or more")
    database = Database(db, retry_seconds=retry_seconds)
    database.retrier.on_wait = lambda waited: database_waiting(waited, err_console)
    for line in database.notices:
        err_console.print(line, highlight=False, soft_wrap=True)
    return database


def run_stored(
    name: str | None,
    inputs: tuple[Any, Any, Any],
    fit: tuple[Iterable[int], str] | None,
    store: str | None,
    db: str | None,
    retry_seconds: float,
    run: Callable[[Any, Any, Any], Any],
) -> Any:
    """What a command that trains a stored run does around it: check the name, the inputs
    (model, train, executor settings) and, on a local machine, that the widths of `fit`
    (widths, the option naming them) fit its memory; then `run(database, metrics, executor)`
    and close the executor."""
    from telescope.cli.checks import check_widths_fit
    from telescope.runs.executor import make_executor
    from telescope.runs.preflight import check_inputs
    from telescope.storage.metrics import MetricsStore, check_sweep_name

    if name is not None:
        check_sweep_name(name)
    model, train, executor_settings = inputs
    check_inputs(model, train, executor_settings)
    if fit is not None and executor_settings.ray_address is None:
        check_widths_fit(model, fit[0], train.device, fit[1])
    metrics = MetricsStore(store)
    metrics.check_writable()
    runner = make_executor(executor_settings)
    try:
        with open_database(db, retry_seconds) as database:
            return run(database, metrics, runner)
    finally:
        runner.close()


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
    typer.Option(
        "--model",
        help="Sweep your model: package.module:factory, factory(width) -> nn.Module (replaces the config's [model]).",
    ),
]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Role rules for your model (TOML or JSON), tried before the defaults.")
]


def load_sweep_config(path: Path, model: str | None = None, rules: Path | None = None) -> Any:
    """The sweep config at `path`, with --model and --rules applied (--rules needs a user
    model: --model, or the config's factory or hf_config)."""
    from telescope.config import parse_config, read_config_file
    from telescope.model_config import with_model

    data = read_config_file(path)
    if rules is None:
        return parse_config(with_model(data, model))
    named = model is not None or any(k in data.get("model", {}) for k in ("factory", "hf_config"))
    if not named:
        raise TelescopeError(
            "--rules gives role rules for your model: pass --model, or name it in the config's [model]"
        )
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
    """Turns user-input errors raised anywhere below a command, and the option parser's
    usage errors, into one line and exit 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as e:
            if e.format_message():  # typer's rich help is printed already, click's is the message
                e.show()
            sys.exit(e.exit_code)
        except UsageError as e:  # a bad option or argument: the parser's 5-line box, in one line
            where = f"{e.ctx.command_path} --help" if e.ctx is not None else "telescope --help"
            message = " ".join(e.format_message().replace("Value error, ", "").split())
            _print_error(f"{message} (try `{where}`)")
            sys.exit(2)
        except ClickException as e:
            _print_error(" ".join(e.format_message().split()))
            sys.exit(e.exit_code)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except TelescopeError as e:
            _print_error(str(e))
            raise typer.Exit(2) from None


def _print_error(message: str) -> None:
    err_console.print(styled("error:", "bold red", f" {message}"), highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_rows(
    rows: Iterable[dict[str, Any]],
    fmt: OutputFormat = OutputFormat.table,
    columns: list[str] | None = None,
    title: str | None = None,
    drop: Sequence[str] = (),
    wide: bool = False,
    raw: bool = False,
) -> None:
    """Print rows (dicts) as a rich table, CSV or JSON; the one output path for row data.
    The table fits the terminal (see telescope.cli.tables): `drop` names the columns it may
    leave out, least important first, unless `wide`; `raw` keeps keys and full floats."""
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
        print_table(console, rows, columns, title=title, drop=drop, wide=wide, raw=raw)
