"""Opening a telescope database: the SQLAlchemy engine, the checks on a SQLite file before
it is opened read-write, and the schema version (tables created on first use, a database of
another program or another version refused with a message that names the fix)."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from telescope.errors import StorageError
from telescope.storage.locks import CREATE_LOCK_KEY, ProcessLocks
from telescope.storage.retry import is_transient
from telescope.storage.schema import (
    DATA_TABLES,
    LEASE_TABLE,
    SCHEMA_VERSION,
    UPGRADES,
    VERSION_TABLE,
    Base,
    SchemaVersionModel,
)
from telescope.storage.urls import error_line, read_only_uri, safe_url

SQLITE_BUSY_TIMEOUT_S = 30.0


def check_sqlite_target(path: Path, create: bool) -> None:
    """Refuse a SQLite path that cannot be (or, without `create`, is not yet) a database."""
    if not path.exists() and not create:
        raise StorageError(f"no telescope database at {path} (run `telescope sweep CONFIG` first, or pass --db)")
    if not path.parent.is_dir():
        raise StorageError(f"cannot create database {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise StorageError(f"database path {path} is a folder, not a file")
    if create:  # SQLite writes its journal and the lock file beside the database
        try:
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as e:
            raise StorageError(
                f"cannot write to database {path}: its folder {path.parent} takes no files ({e.strerror})"
            ) from None
    if path.exists():
        _check_sqlite_file(path)


def _check_sqlite_file(path: Path) -> None:
    """Refuse a damaged or foreign file before SQLAlchemy opens it read-write (which would
    checkpoint a WAL into the damaged file): read it read-only and let SQLite check its pages."""
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        if e.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN:  # e.g. a WAL file that cannot be made beside it
            raise StorageError(
                f"cannot open database {path} ({e}): check that it and its folder may be read and written"
            ) from None
        problems = [str(e)]
    if problems != ["ok"]:
        raise StorageError(
            f"database {path} is damaged or not a SQLite file ({problems[0]}): restore it from a backup, "
            f"or salvage it with `sqlite3 {path} .recover`, or pass another --db"
        )


def make_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise StorageError(f"cannot use database {safe_url(url)}: {error_line(e, url)}") from None
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, one fsync per checkpoint
    cursor.close()


def check_schema(engine: Engine, url: URL, locks: ProcessLocks, create: bool) -> bool:
    """Create the tables of a fresh database (with `create`), then refuse a database that
    is not telescope's or has another schema version. Returns whether it created them."""
    display_url = safe_url(url)
    tables, version = _schema(engine, url)
    created = False
    if create and version is None:
        # Two drivers starting on a fresh database would both create the tables (a duplicate
        # key in PostgreSQL's catalog, "table already exists" in SQLite): they take turns.
        # The first creates every table and the version row while it holds the lock, so the
        # others read the finished schema, never one half made (which would look foreign).
        with locks.exclusive(CREATE_LOCK_KEY, wait=True):
            tables, version = _schema(engine, url)
            if not tables & {VERSION_TABLE, *DATA_TABLES}:
                _create_tables(engine, url)
                created = True
                tables, version = _schema(engine, url)
    if VERSION_TABLE in tables:
        if (
            version is not None
            and version < SCHEMA_VERSION
            and all(v in UPGRADES for v in range(version, SCHEMA_VERSION))
        ):
            with locks.exclusive(CREATE_LOCK_KEY, wait=True):
                _upgrade(engine, url)
            _, version = _schema(engine, url)
        if version != SCHEMA_VERSION:
            raise StorageError(_incompatible_message(display_url, version))
        return created
    if tables & set(DATA_TABLES):
        raise StorageError(
            f"{display_url} is not a telescope database (it has tables named "
            f"{', '.join(sorted(tables & set(DATA_TABLES)))} but no {VERSION_TABLE}): pass another --db"
        )
    raise StorageError(f"no telescope tables in {display_url} (run `telescope sweep CONFIG` first, or pass --db)")


def _schema(engine: Engine, url: URL) -> tuple[set[str], int | None]:
    """The database's table names and its telescope schema version (None if not stored)."""
    try:
        tables = set(inspect(engine).get_table_names())
        if VERSION_TABLE not in tables:
            return tables, None
        with Session(engine) as session:
            return tables, session.scalar(select(SchemaVersionModel.schema_version))
    except DBAPIError as e:
        if is_transient(e) and not _refused(e):
            raise  # a server restarting: retried by the caller
        raise StorageError(f"cannot open database {safe_url(url)}: {error_line(e, url)}") from None
    except SQLAlchemyError as e:
        raise StorageError(f"cannot open database {safe_url(url)}: {error_line(e, url)}") from None


def _refused(error: DBAPIError) -> bool:
    # Nothing listening at all is more likely a wrong URL than a restart: said at once.
    return "connection refused" in str(error.orig).lower()


def _upgrade(engine: Engine, url: URL) -> None:
    """Bring an older schema to SCHEMA_VERSION, one version per transaction (another
    driver that upgraded it first leaves nothing to do)."""
    try:
        while (version := _schema(engine, url)[1]) is not None and version < SCHEMA_VERSION:
            with engine.begin() as conn:
                for statement in UPGRADES[version]:
                    conn.exec_driver_sql(statement)
                conn.execute(update(SchemaVersionModel).values(schema_version=version + 1))
    except (DBAPIError, SQLAlchemyError) as e:
        raise StorageError(
            f"cannot upgrade {safe_url(url)} to schema version {SCHEMA_VERSION}: {error_line(e, url)}"
        ) from None


def _create_tables(engine: Engine, url: URL) -> None:
    try:
        Base.metadata.create_all(engine, tables=[t for t in Base.metadata.sorted_tables if t.name != LEASE_TABLE])
        with Session(engine) as session, session.begin():
            session.add(
                SchemaVersionModel(
                    id=1,
                    schema_version=SCHEMA_VERSION,
                    library_version=_library_version(),
                    created_at=datetime.now(timezone.utc),
                )
            )
        if url.get_backend_name() == "sqlite":
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except (DBAPIError, SQLAlchemyError) as e:
        raise StorageError(f"cannot create tables in {safe_url(url)}: {error_line(e, url)}") from None


def _incompatible_message(url: str, version: int | None) -> str:
    if version is None or version < SCHEMA_VERSION:
        return (
            f"{url} has telescope schema version {version}, this telescope needs version {SCHEMA_VERSION}: "
            "there is no automatic upgrade; export what you need with `telescope export` or "
            "`telescope query`, then use a new database with --db"
        )
    return (
        f"{url} has telescope schema version {version}, newer than this telescope's {SCHEMA_VERSION}: "
        "upgrade telescope (pip install -U telescope) or use another database with --db"
    )


def _library_version() -> str:
    try:
        return metadata.version("telescope")
    except metadata.PackageNotFoundError:
        return "unknown"


def check_writable(engine: Engine, url: URL) -> None:
    """Refuse, before any work, a database this process cannot write: a read-only or
    immutable file or folder, a read-only server or user. Writes a row unchanged."""
    try:
        with engine.begin() as conn:
            conn.execute(update(SchemaVersionModel).values(library_version=SchemaVersionModel.library_version))
    except DBAPIError as e:
        if is_transient(e):
            raise
        raise StorageError(f"cannot write to database {safe_url(url)}: {error_line(e, url)}") from None
