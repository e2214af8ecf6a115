"""Read-only SQL over the sweep database and the Parquet step metrics (`telescope query`).

Read-only is a property of the connection, not of the query text:

- SQLite is opened with a `file:...?mode=ro` URI, `PRAGMA query_only`, and an
  authorizer that allows reading and nothing else (so ATTACH and PRAGMA writes
  are refused too);
- PostgreSQL: the statement runs as the role telescope_reader, which may read
  telescope's tables and nothing else (telescope.storage.reader). A read-only
  transaction alone lets through `COPY ... TO PROGRAM`,
  `LOCK`, `NOTIFY` and functions with side effects (`pg_read_file`,
  `set_config`, `pg_terminate_backend`, advisory locks). So the server itself
  vets the statement first: it parses it as one prepared statement (more than
  one is refused), then must accept it as the body of a temporary view (only a
  query can be one: no COPY, LOCK, NOTIFY, SET or data-modifying WITH), and the
  view's stored query tree names every function and operator the statement
  calls; any volatile one outside a short list of harmless ones (random() and
  the clocks) is refused. That check runs in a transaction that is rolled back.
  The statement then runs through a cursor (DECLARE takes only queries) in a
  READ ONLY transaction (`default_transaction_read_only`, with a snapshot taken
  first so it cannot be switched back) under a `statement_timeout`;
- with step metrics the statement runs in an in-memory DuckDB holding a
  `metrics` view over the Parquet store and copies of the sweeps, levels and
  trials tables; DuckDB's own parser must classify it as a SELECT, it can read
  no file outside the store, install or load no extension, and cannot change
  those settings back. Parquet files that do not read are left out (and named).

Every path caps the rows returned and the time spent.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy.engine import URL

from telescope.errors import StorageError
from telescope.storage.engine import SQLITE_BUSY_TIMEOUT_S
from telescope.storage.metrics import MetricsStore
from telescope.storage.reader import reader_role
from telescope.storage.urls import error_line, read_only_uri, resolve_url, safe_url

DEFAULT_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0
MAX_LIMIT = 1_000_000_000  # rows are held in memory; FETCH takes a 64-bit count
MAX_TIMEOUT_S = 2_000_000  # PostgreSQL's statement_timeout holds at most 2^31 - 1 ms (24.8 days)

READ_ONLY_REFUSAL = "refused: telescope query is read-only"
ONE_STATEMENT = "refused: telescope query runs one statement at a time"
READER_REFUSAL = "refused: telescope query reads telescope's own tables and nothing else"


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than the limit allowed
    engine: str  # "sqlite", "postgresql" or "duckdb": who ran the statement
    skipped_files: tuple[str, ...] = ()  # unreadable Parquet files left out of `metrics`

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def mentions_metrics(sql: str) -> bool:
    """Whether the statement names the `metrics` table, so it needs DuckDB and the Parquet store."""
    return re.search(r"\bmetrics\b", sql, flags=re.IGNORECASE) is not None


def run_query(
    sql: str,
    db: str | None = None,
    store: str | Path | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    timeout: float = DEFAULT_TIMEOUT_S,
    metrics: bool | None = None,
) -> QueryResult:
    """Run one read-only SQL statement against the database `db` (URL, path or None for
    ./telescope.db). With `metrics` (default: when the SQL mentions `metrics`) it runs in
    DuckDB, where the table `metrics` holds the step metrics of the store `store`.
    Returns at most `limit` rows; stops after `timeout` seconds. Any refusal or
    failure is a StorageError with one line."""
    if not sql.strip():
        raise StorageError("empty query: pass a SQL statement, or - to read it from stdin")
    if not 1 <= limit <= MAX_LIMIT:
        raise StorageError(f"invalid --limit {limit}: it must be from 1 to {MAX_LIMIT:,}")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise StorageError(f"invalid --timeout {timeout}: it must be more than 0 and at most {MAX_TIMEOUT_S:,} seconds")
    root = MetricsStore(store).root  # a file where the store should be is refused, as `sweep` refuses it
    url = resolve_url(db)
    use_duckdb = mentions_metrics(sql) if metrics is None else metrics
    deadline = time.monotonic() + timeout
    with _read_only_connection(url, timeout, deadline) as connection:
        if use_duckdb:
            from telescope.storage.query_duckdb import run_in_duckdb  # duckdb only when asked for

            return run_in_duckdb(sql, connection, root, limit, deadline)
        return _run_in_database(sql, connection, limit)


# ---------------------------------------------------------------------------
# Read-only connections


@dataclass
class ReadOnlyConnection:
    dbapi: Any
    backend: str  # "sqlite" or "postgresql"
    url: URL
    timeout: float
    denied: list[str]  # what the SQLite authorizer refused, for the message
    role: str | None = None  # PostgreSQL: the role every transaction reads as (telescope.storage.reader)

    def begin_reading(self) -> None:
        """Start a PostgreSQL transaction as the reader role and take its snapshot, after
        which PostgreSQL refuses `SET TRANSACTION READ WRITE` in it."""
        if self.role is not None:
            self.dbapi.execute(f"SET LOCAL ROLE {self.role}")
        self.dbapi.execute("SELECT 1")


@contextmanager
def _read_only_connection(url: URL, timeout: float, deadline: float) -> Iterator[ReadOnlyConnection]:
    if url.get_backend_name() == "sqlite":
        connection = _open_sqlite(url, timeout, deadline)
    else:
        connection = _open_postgres(url, timeout)
    try:
        yield connection
    finally:
        if connection.backend == "postgresql":
            try:
                connection.dbapi.rollback()
            except Exception:  # the server may have gone; closing is all that is left
                pass
        connection.dbapi.close()


# Pragmas that only read; any other pragma, and any of these given a value, is refused.
_READING_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "user_version",
    "schema_version",
    "application_id",
    "journal_mode",
    "page_count",
    "page_size",
    "freelist_count",
    "encoding",
    "foreign_keys",
    "data_version",
    "query_only",
}
_PRAGMAS_WITH_TABLE_ARGUMENT = {
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "table_list",
}
_SQLITE_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX",
        "CREATE_TABLE",
        "CREATE_TEMP_INDEX",
        "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW",
        "CREATE_TRIGGER",
        "CREATE_VIEW",
        "DELETE",
        "DROP_INDEX",
        "DROP_TABLE",
        "DROP_TEMP_INDEX",
        "DROP_TEMP_TABLE",
        "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW",
        "DROP_TRIGGER",
        "DROP_VIEW",
        "INSERT",
        "PRAGMA",
        "READ",
        "SELECT",
        "TRANSACTION",
        "UPDATE",
        "ATTACH",
        "DETACH",
        "ALTER_TABLE",
        "REINDEX",
        "ANALYZE",
        "CREATE_VTABLE",
        "DROP_VTABLE",
        "FUNCTION",
        "SAVEPOINT",
        "RECURSIVE",
    )
}


def _sqlite_authorizer(denied: list[str]) -> Callable[..., int]:
    reading = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in reading:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
            name = arg1.lower()
            if name in _READING_PRAGMAS and (arg2 is None or name in _PRAGMAS_WITH_TABLE_ARGUMENT):
                return sqlite3.SQLITE_OK
            denied.append(f"PRAGMA {arg1}" + (f"={arg2}" if arg2 is not None else ""))
            return sqlite3.SQLITE_DENY
        what = _SQLITE_ACTION_NAMES.get(action, f"action {action}")
        denied.append(f"{what} {arg1}" if arg1 and action != sqlite3.SQLITE_ATTACH else what)
        return sqlite3.SQLITE_DENY

    return authorize


def _open_sqlite(url: URL, timeout: float, deadline: float) -> ReadOnlyConnection:
    if url.database in (None, "", ":memory:"):
        raise StorageError("telescope query needs a database file, not an in-memory database")
    path = Path(url.database)
    if not path.is_file():
        raise StorageError(f"no database at {path} (run `telescope sweep CONFIG` first, or pass --db)")
    try:
        dbapi = sqlite3.connect(read_only_uri(path), uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        dbapi.execute("PRAGMA query_only=ON")
        dbapi.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails now if not a database
    except sqlite3.Error as e:
        raise StorageError(f"cannot open database {path} read-only: {e}") from None
    denied: list[str] = []
    dbapi.set_authorizer(_sqlite_authorizer(denied))
    # Returning non-zero from the progress handler interrupts the running statement.
    dbapi.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return ReadOnlyConnection(dbapi, "sqlite", url, timeout, denied)


def _open_postgres(url: URL, timeout: float) -> ReadOnlyConnection:
    # Always psycopg 3, whatever driver the URL names: the one-statement guarantee of
    # _run_in_database relies on its prepared statements.
    import psycopg  # only PostgreSQL users need the driver loaded
    from psycopg.conninfo import make_conninfo

    args: dict[str, Any] = {k: v for k, v in url.query.items() if isinstance(v, str)}
    args.update(url.translate_connect_args(username="user", database="dbname"))
    # default_transaction_read_only makes every transaction of this session read-only,
    # including one the user's statement might try to start after a COMMIT.
    args["options"] = (
        args.get("options", "")
        + f" -c default_transaction_read_only=on -c statement_timeout={max(1, int(timeout * 1000))}"
    ).strip()
    args.setdefault("connect_timeout", 10)
    try:
        # The URL's parameters go into the libpq conninfo (which accepts only libpq's own
        # keywords), never into connect()'s keyword arguments such as autocommit.
        # prepare_threshold must not be None: that would silently turn prepare=True off.
        dbapi = psycopg.connect(make_conninfo(**args), autocommit=False, prepare_threshold=5)
        dbapi.read_only = True
        try:
            with dbapi.cursor() as cursor:
                role = reader_role(cursor, safe_url(url))
        except StorageError:
            dbapi.close()
            raise
        dbapi.rollback()
        connection = ReadOnlyConnection(dbapi, "postgresql", url, timeout, [], role)
        connection.begin_reading()
    except psycopg.Error as e:
        raise StorageError(f"cannot connect to {safe_url(url)}: {error_line(e, url)}") from None
    return connection


# ---------------------------------------------------------------------------
# Running the statement in the database itself


def _run_in_database(sql: str, connection: ReadOnlyConnection, limit: int) -> QueryResult:
    if connection.backend == "postgresql":
        return _run_in_postgres(sql, connection, limit)
    cursor = connection.dbapi.cursor()
    try:
        cursor.execute(sql)  # sqlite3 itself refuses more than one statement
        if cursor.description is None:
            return QueryResult([], [], False, connection.backend)
        columns = unique_names([d[0] for d in cursor.description])
        rows = [tuple(r) for r in cursor.fetchmany(limit + 1)]
    except Exception as e:
        raise _query_error(e, connection) from None
    finally:
        cursor.close()
    return QueryResult(columns, rows[:limit], len(rows) > limit, connection.backend)


# Volatile functions that read nothing and change nothing; every other volatile one is refused.
_HARMLESS_VOLATILE = {"random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid"}
# Built-in functions that run SQL the checks below cannot see: given as text (query_to_xml,
# ts_stat), or over every table and view of a relation, schema or database (table_to_xml...).
_RUNS_SQL = re.compile(r"(.*_to_xml(schema|_and_xmlschema)?|ts_stat)")
_CHECK_VIEW = "pg_temp.telescope_query_check"
# Fields of a stored query tree (pg_node_tree) that hold function and operator OIDs. User
# text never reaches them: constants are stored as bytes and names with escaped blanks.
_FUNCTION_FIELDS = re.compile(r":(?:funcid|aggfnoid|winfnoid|opfuncid) (\d+)")
_OPERATOR_FIELDS = re.compile(r":opno (\d+)")


def _run_in_postgres(sql: str, connection: ReadOnlyConnection, limit: int) -> QueryResult:
    import psycopg

    dbapi = connection.dbapi
    try:
        dbapi.rollback()  # end the connection's first (read-only) transaction
        try:
            _vet_postgres_statement(sql, connection)
        finally:
            dbapi.rollback()  # the check's temporary view goes
        connection.begin_reading()
        # A named cursor is DECLARE ... CURSOR FOR, which takes nothing but a query.
        with dbapi.cursor(name="telescope_query") as cursor:
            cursor.execute(sql)
            columns = unique_names([d.name for d in cursor.description or []])
            rows = [tuple(r) for r in cursor.fetchmany(limit + 1)] if columns else []
    except psycopg.Error as e:
        raise _query_error(e, connection) from None
    return QueryResult(columns, rows[:limit], len(rows) > limit, connection.backend)


def _vet_postgres_statement(sql: str, connection: ReadOnlyConnection) -> None:
    """Let the server parse `sql` and refuse, before it runs, anything but one query that
    calls no volatile function (see the module's docstring). Rolled back by the caller."""
    import psycopg
    from psycopg import pq

    dbapi = connection.dbapi
    parsed = dbapi.pgconn.prepare(b"", sql.encode())  # parse and analyse only: nothing runs
    if parsed.status != pq.ExecStatus.COMMAND_OK:
        if parsed.error_field(pq.DiagnosticField.SOURCE_FUNCTION) == b"exec_parse_message":
            raise StorageError(ONE_STATEMENT)
        message = (parsed.error_message.decode(errors="replace").strip().splitlines() or ["error"])[0]
        raise StorageError(f"query failed: {message.removeprefix('ERROR:').strip()}")
    columns = dbapi.pgconn.describe_prepared(b"").nfields
    if columns == 0:
        raise StorageError(f"{READ_ONLY_REFUSAL} (not a query: only SELECT, VALUES, TABLE and WITH ... SELECT run)")
    names = ", ".join(f"c{i}" for i in range(columns))  # the statement's own names may repeat
    with dbapi.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ WRITE")  # for the temporary view only; rolled back
        try:
            cursor.execute(f"CREATE TEMPORARY VIEW {_CHECK_VIEW} ({names}) AS\n{sql}", prepare=True)
        except psycopg.Error as e:
            reason = error_line(e, connection.url)
            if "pseudo-type void" in reason:
                reason = "a column is void: the statement calls a function for its side effects"
            raise StorageError(f"{READ_ONLY_REFUSAL} ({reason})") from None
        cursor.execute(f"SELECT ev_action::text FROM pg_rewrite WHERE ev_class = '{_CHECK_VIEW}'::regclass")
        tree = cursor.fetchone()[0]
        functions = [int(oid) for oid in _FUNCTION_FIELDS.findall(tree)]
        operators = [int(oid) for oid in _OPERATOR_FIELDS.findall(tree)]
        cursor.execute(
            "SELECT DISTINCT p.proname, p.oid::regprocedure::text, p.provolatile = 'v', "
            "p.pronamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) FROM pg_proc p "
            "WHERE p.oid = ANY(%s) OR p.oid IN (SELECT oprcode FROM pg_operator WHERE oid = ANY(%s))",
            [functions, operators],
        )
        called = cursor.fetchall()
    side_effects = sorted(sig for name, sig, volatile, _ in called if volatile and name not in _HARMLESS_VOLATILE)
    if side_effects:
        raise StorageError(f"{READ_ONLY_REFUSAL} (calls {', '.join(side_effects)}, which may have side effects)")
    # A function someone created may do anything, whatever its volatility says.
    others = sorted(sig for name, sig, _, built_in in called if not built_in or _RUNS_SQL.fullmatch(name))
    if others:
        raise StorageError(f"{READ_ONLY_REFUSAL} (calls {', '.join(others)}: only built-in functions run)")


def _query_error(error: Exception, connection: ReadOnlyConnection) -> StorageError:
    message = error_line(error, connection.url)
    if connection.backend == "sqlite":
        if isinstance(error, sqlite3.ProgrammingError) and "one statement" in message:
            return StorageError(ONE_STATEMENT)
        if connection.denied or "readonly database" in message or "not authorized" in message:
            # The statement's own action (DROP TABLE trials) reads better than the
            # schema-table writes SQLite authorizes on its behalf.
            own = [d for d in connection.denied if "sqlite_" not in d]
            reason = (own or connection.denied or [message])[0]
            return StorageError(f"{READ_ONLY_REFUSAL} ({reason})")
        if message == "interrupted":
            return timeout_error(connection.timeout)
        return StorageError(f"query failed: {message}")
    code = getattr(error, "sqlstate", None)
    if code == "25006":  # read_only_sql_transaction
        return StorageError(f"{READ_ONLY_REFUSAL} ({message})")
    if code == "42501":  # insufficient_privilege: telescope_reader may read telescope's tables only
        return StorageError(f"{READER_REFUSAL} ({message})")
    if code == "57014":  # query_canceled: statement_timeout
        return timeout_error(connection.timeout)
    return StorageError(f"query failed: {message}")


def timeout_error(timeout: float) -> StorageError:
    return StorageError(f"query stopped after the time limit of {timeout:g} s (raise it with --timeout)")


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique (a, a_2, ...), so rows can be dicts."""
    unique: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in unique:
            n += 1
            candidate = f"{name}_{n}"
        unique.append(candidate)
    return unique
