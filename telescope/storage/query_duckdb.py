"""`telescope query` over the step metrics: the statement runs in an in-memory DuckDB
holding a `metrics` view over the Parquet store and copies of the sweeps, levels and trials
tables, read through the read-only connection of telescope.storage.query. DuckDB's own
parser must classify it as a SELECT; it can read no file outside the store, install or
load no extension, and cannot change those settings back."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import BigInteger, Double, Integer

from telescope.errors import StorageError
from telescope.storage.metrics import PARTITION_SCHEMA, STEP_SCHEMA, readable_metrics_files
from telescope.storage.query import (
    ONE_STATEMENT,
    READ_ONLY_REFUSAL,
    QueryResult,
    ReadOnlyConnection,
    timeout_error,
    unique_names,
)
from telescope.storage.schema import DATA_TABLES, Base, UTCDateTime
from telescope.storage.urls import error_line, safe_url


def run_in_duckdb(sql: str, connection: ReadOnlyConnection, store: Path, limit: int, deadline: float) -> QueryResult:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise StorageError(f"query failed: {_first_line(e)}") from None
    if len(statements) != 1:
        raise StorageError(ONE_STATEMENT if statements else "empty query: pass a SQL statement")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = statement.type.name.replace("_", " ")
        raise StorageError(f"{READ_ONLY_REFUSAL} ({kind} statement; with metrics only SELECT runs)")
    duck = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), duck.interrupt)
    try:
        for table in DATA_TABLES:
            duck.register(table, _load_table(connection, table))
        skipped = _create_metrics_view(duck, store)
        # From here on the statement can read the store and nothing else, and cannot undo that.
        duck.execute(f"SET allowed_directories = [{_duck_string(str(store.absolute()) + os.sep)}]")
        duck.execute("SET enable_external_access = false")
        duck.execute("SET lock_configuration = true")
        timer.start()
        cursor = duck.execute(statement.query)
        columns = unique_names([d[0] for d in cursor.description or []])
        rows = [tuple(r) for r in cursor.fetchmany(limit + 1)] if columns else []
    except duckdb.InterruptException:
        raise timeout_error(connection.timeout) from None
    except duckdb.Error as e:
        raise StorageError(f"query failed: {_first_line(e)}") from None
    finally:
        timer.cancel()
        duck.close()
    return QueryResult(columns, rows[:limit], len(rows) > limit, "duckdb", skipped)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _arrow_type(column: Any) -> pa.DataType:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, (Integer, BigInteger)):
        return pa.int64()
    if isinstance(kind, Double):
        return pa.float64()
    return pa.string()


def _load_table(connection: ReadOnlyConnection, name: str) -> pa.Table:
    """Copy one telescope table, typed by its schema, through the read-only connection."""
    columns = list(Base.metadata.tables[name].columns)
    schema = pa.schema([(c.name, _arrow_type(c)) for c in columns])
    cursor = connection.dbapi.cursor()
    try:
        cursor.execute(f"SELECT {', '.join(c.name for c in columns)} FROM {name}")
        rows = cursor.fetchall()
    except Exception as e:
        raise StorageError(
            f"cannot read table {name} from {safe_url(connection.url)} "
            f"(is it a telescope database?): {error_line(e, connection.url)}"
        ) from None
    finally:
        cursor.close()
    data: dict[str, list[Any]] = {}
    for index, field in enumerate(schema):
        values = [row[index] for row in rows]
        if pa.types.is_timestamp(field.type):
            values = [_utc(v) for v in values]
        data[field.name] = values
    return pa.table(data, schema=schema)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps datetimes as naive-UTC text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _create_metrics_view(duck: duckdb.DuckDBPyConnection, store: Path) -> tuple[str, ...]:
    """Create the `metrics` view over the store's readable Parquet files; returns the
    files left out because they do not read (truncated, or not Parquet)."""
    files, skipped = readable_metrics_files(store)
    if files:
        duck.execute(
            "CREATE VIEW metrics AS SELECT CAST(sweep AS VARCHAR) AS sweep, CAST(level AS BIGINT) AS level, "
            + ", ".join(f.name for f in STEP_SCHEMA)
            + f" FROM read_parquet([{', '.join(_duck_string(str(f.absolute())) for f in files)}], "
            "hive_partitioning = true, hive_types_autocast = false)"
        )
    else:  # no trial has finished yet: an empty table with the same columns
        duck.register("metrics", pa.schema(list(PARTITION_SCHEMA) + list(STEP_SCHEMA)).empty_table())
    return tuple(str(f) for f in skipped)


def _duck_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
