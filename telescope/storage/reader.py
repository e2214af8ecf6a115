"""The least-privilege reader of `telescope query` on PostgreSQL.

A read-only transaction does not stop what a view or a function calls: a view over
`pg_terminate_backend` or `lo_export`, a STABLE function that takes an advisory lock.
So `query` runs its statement under the role `telescope_reader` (`SET LOCAL ROLE` inside
the read-only transaction), which may SELECT telescope's own tables and nothing else:
any other view, `*_to_xml` over one, large objects, dblink and the server's files then
fail on privileges, whatever the text says. The parse checks of telescope.storage.query
stay as a first line of defence.

`telescope db grant-reader` creates the role and grants it; a telescope that creates the
tables does the same when the connecting user may. A superuser connection without the
role is refused, since it could read or change anything.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from telescope.errors import StorageError
from telescope.storage.schema import DATA_TABLES, VERSION_TABLE

READER_ROLE = "telescope_reader"
READ_TABLES = (*DATA_TABLES, VERSION_TABLE)
GRANT_COMMAND = "telescope db grant-reader"


def grant_reader(conn: Connection) -> str:
    """Create the role (if missing) and let it SELECT the telescope tables that `conn`
    sees, and nothing else; returns one line saying what was done. Commits."""
    missing = [t for t in READ_TABLES if conn.scalar(text("SELECT to_regclass(:t)"), {"t": t}) is None]
    if missing:
        raise StorageError(f"no telescope tables here ({', '.join(missing)} missing): run `telescope sweep` first")
    exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": READER_ROLE}) is not None
    try:
        if not exists:
            _create_role(conn)
        schema = conn.scalar(
            text("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'sweeps'::regclass")
        )
        conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {READER_ROLE}"))
        tables = ", ".join(f"{schema}.{t}" for t in READ_TABLES)
        conn.execute(text(f"GRANT SELECT ON {tables} TO {READER_ROLE}"))
        if not _is_superuser(conn) and not conn.scalar(
            text("SELECT pg_has_role(current_user, :r, 'MEMBER')"), {"r": READER_ROLE}
        ):
            conn.execute(text(f"GRANT {READER_ROLE} TO current_user"))
        conn.commit()
    except DBAPIError as e:
        conn.rollback()
        reason = (str(e.orig).strip().splitlines() or ["error"])[0]
        raise StorageError(
            f"cannot grant the role {READER_ROLE} as {conn.scalar(text('SELECT current_user'))} ({reason}): "
            f"ask a database administrator to run `{GRANT_COMMAND}` with this --db"
        ) from None
    created = "created the role" if not exists else "granted the role"
    return (
        f"{created} {READER_ROLE}: telescope query reads {', '.join(READ_TABLES)} "
        f"of schema {schema} under it, nothing else"
    )


def _create_role(conn: Connection) -> None:
    # Drivers opening fresh databases at once may race to create the (cluster-wide) role.
    try:
        with conn.begin_nested():
            conn.execute(text(f"CREATE ROLE {READER_ROLE} NOLOGIN"))
    except DBAPIError as e:
        if getattr(e.orig, "sqlstate", None) not in ("42710", "23505"):  # duplicate_object, unique_violation
            raise


def _is_superuser(conn: Connection) -> bool:
    return bool(conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")))


def reader_role(cursor: Any, display_url: str) -> str | None:
    """The role `query` runs under on this psycopg connection: telescope_reader when it may
    read the tables; None (the connecting user) for a user that is not a superuser and has
    no such role; a superuser without it is refused with the fix."""
    cursor.execute(
        "SELECT r.rolsuper, current_user, to_regclass('sweeps') IS NOT NULL, "
        "EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s) "
        "FROM pg_roles r WHERE r.rolname = current_user",
        {"role": READER_ROLE},
    )
    superuser, user, has_tables, role_exists = cursor.fetchone()
    if role_exists and has_tables:
        cursor.execute(
            "SELECT pg_has_role(current_user, %(role)s, 'MEMBER') "
            "AND bool_and(has_table_privilege(%(role)s, t, 'SELECT')) FROM unnest(%(tables)s::text[]) t",
            {"role": READER_ROLE, "tables": list(READ_TABLES)},
        )
        if cursor.fetchone()[0]:
            return READER_ROLE
    if not superuser:
        return None
    raise StorageError(
        f"refused: telescope query will not run as the superuser {user}, which could read and change anything, "
        f"and {display_url} has no role {READER_ROLE} that may read telescope's tables: run "
        f"`{GRANT_COMMAND} --db URL` once, then query again"
    )
