"""Where the Optuna mirror lives, checked before anything is written.

Optuna's tables (`studies`, `trials`, ...) would collide with telescope's, so the mirror
never shares a namespace with them: beside a SQLite database `X.db` it is the file
`X.optuna.db`; in PostgreSQL it is a schema of its own in the same database
(`telescope_optuna`, or `S_optuna` when the telescope URL sets `search_path=S`).
`--storage` names another place: a SQLite file or a PostgreSQL URL, whose
`options=-csearch_path=SCHEMA` picks the schema (created when missing).
"""

from __future__ import annotations

import re
from pathlib import Path

from optuna.storages import RDBStorage
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from telescope.errors import StorageError
from telescope.storage.schema import VERSION_TABLE
from telescope.storage.urls import SQLITE_SUFFIXES, error_line, resolve_url, safe_url

DEFAULT_SCHEMA = "telescope_optuna"
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")
_OPTUNA_TABLES = {"studies", "version_info"}


def mirror_url(telescope_url: URL, storage: str | None) -> URL:
    """The mirror's URL: `storage` when given, else the default place beside `telescope_url`."""
    if storage:
        if "://" not in storage and Path(storage).suffix.lower() not in SQLITE_SUFFIXES:
            raise StorageError(
                f"--storage {storage!r} is neither a database URL nor a SQLite file ({', '.join(SQLITE_SUFFIXES)})"
            )
        url = resolve_url(storage)
    elif telescope_url.get_backend_name() == "sqlite":
        if telescope_url.database in (None, "", ":memory:"):
            raise StorageError("an in-memory database has no place for a mirror beside it: pass --storage")
        path = Path(telescope_url.database)
        url = telescope_url.set(database=str(path.with_name(f"{path.stem}.optuna{path.suffix or '.db'}")))
    else:
        schema = _schema(telescope_url)
        url = _with_schema(telescope_url, f"{schema}_optuna" if schema else DEFAULT_SCHEMA)
    if _same_place(url, telescope_url):
        raise StorageError(
            f"--storage {safe_url(url)} is the telescope database itself; Optuna's tables need a place of their own"
        )
    return url


def open_mirror(url: URL) -> RDBStorage:
    """Check that `url` can hold the mirror (reachable, not a telescope database, not some
    other program's tables), then open it as an Optuna storage, creating it if new."""
    _check(url)
    try:
        schema = _schema(url) if url.get_backend_name() == "postgresql" else None
        if schema:
            engine = create_engine(_with_schema(url, None), isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            finally:
                engine.dispose()
        storage = RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=_engine_kwargs(url))
    except (SQLAlchemyError, OSError) as e:
        raise StorageError(f"cannot create the Optuna mirror in {safe_url(url)}: {error_line(e, url)}") from None
    if url.get_backend_name() == "sqlite":
        _tune_sqlite(storage)
    return storage


def _check(url: URL) -> None:
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not path.parent.is_dir():
            raise StorageError(f"cannot create the Optuna mirror {path}: folder {path.parent} does not exist")
        if not path.exists():
            return
        if path.is_dir():
            raise StorageError(f"the Optuna mirror {path} is a folder, not a file")
    engine = create_engine(url, **_engine_kwargs(url))
    try:
        tables = set(inspect(engine).get_table_names())
    except (SQLAlchemyError, OSError) as e:
        raise StorageError(f"cannot reach the Optuna storage {safe_url(url)}: {error_line(e, url)}") from None
    finally:
        engine.dispose()
    if VERSION_TABLE in tables:
        raise StorageError(
            f"{safe_url(url)} holds telescope's own tables; Optuna's tables need a place of their own "
            "(another SQLite file, or a PostgreSQL URL with options=-csearch_path=SCHEMA)"
        )
    if tables and not _OPTUNA_TABLES <= tables:
        raise StorageError(
            f"{safe_url(url)} has tables of another program ({', '.join(sorted(tables)[:5])}); pass another --storage"
        )


def _engine_kwargs(url: URL) -> dict:
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def _tune_sqlite(storage: RDBStorage) -> None:
    """WAL, so the dashboard reads while the mirror writes, and no fsync per small write
    (a trial's curve is many of them); a lost mirror is rebuilt from the telescope database."""
    with storage.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    storage.engine.dispose()

    @event.listens_for(storage.engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _schema(url: URL) -> str | None:
    options = url.query.get("options")
    found = _SEARCH_PATH.search(" ".join(options) if isinstance(options, tuple) else options or "")
    return found.group(1).strip("\"'") if found else None


def _with_schema(url: URL, schema: str | None) -> URL:
    query = {k: v for k, v in url.query.items() if k != "options"}
    if schema:
        query["options"] = f"-csearch_path={schema}"
    return url.set(query=query)


def _same_place(a: URL, b: URL) -> bool:
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return Path(a.database or "").resolve() == Path(b.database or "").resolve()
    return (a.host, a.port, a.database, _schema(a) or "public") == (b.host, b.port, b.database, _schema(b) or "public")
