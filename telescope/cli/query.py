"""`telescope query "SQL"`: one read-only statement over the sweep database and step metrics."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from telescope.cli.common import DbOption, FormatOption, OutputFormat, StoreOption, WideOption, err_console, print_rows

# The library's defaults (telescope.storage.query), repeated so `--help` needs no database driver.
DEFAULT_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0


def query(
    sql: Annotated[str, typer.Argument(help="One SQL statement, or - to read it from stdin.")],
    db: DbOption = None,
    store: StoreOption = None,
    fmt: FormatOption = OutputFormat.table,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Print at most this many rows.")] = DEFAULT_LIMIT,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Stop the statement after this many seconds.")
    ] = DEFAULT_TIMEOUT_S,
    metrics: Annotated[
        bool | None,
        typer.Option(
            "--metrics/--no-metrics",
            help="Run in DuckDB with a `metrics` table of step metrics (default: when the SQL mentions metrics).",
        ),
    ] = None,
    wide: WideOption = False,
) -> None:
    """Run one read-only SQL statement and print its rows.

    Tables: sweeps, levels, trials; with step metrics also `metrics`
    (sweep, level, trial_key, step, tokens, train_loss, lr, grad_norm, elapsed).
    A statement that would write is refused and the database is left unchanged.
    """
    from telescope.storage.query import run_query

    text = sys.stdin.read() if sql == "-" else sql
    result = run_query(text, db, store, limit=limit, timeout=timeout, metrics=metrics)
    print_rows(result.records(), fmt, columns=result.columns, wide=wide, raw=True)  # SQL's names, full floats
    for path in result.skipped_files:
        err_console.print(
            f"left out 1 unreadable metrics file (truncated or not Parquet): {path}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.truncated:
        err_console.print(f"(showing the first {limit} rows; raise --limit to see more)")
