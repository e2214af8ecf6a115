"""The PostgreSQL test server, for tests that run on SQLite and PostgreSQL alike.

PostgreSQL tests run against `TELESCOPE_TEST_PG_URL` (default: the local
server, database `test`); each test module gets a throwaway database and each
test its own schema (the `pg_database` and `db_url` fixtures in conftest.py).
An unreachable server fails the tests loudly, unless TELESCOPE_SKIP_PG=1.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from telescope.storage.urls import resolve_url

DEFAULT_TEST_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


def postgres_skipped() -> bool:
    return os.environ.get("TELESCOPE_SKIP_PG", "") not in ("", "0")


def pg_test_url() -> URL:
    return resolve_url(os.environ.get("TELESCOPE_TEST_PG_URL", DEFAULT_TEST_PG_URL))


@contextmanager
def throwaway_postgres_database() -> Iterator[URL]:
    """Create a database with a random name on the test server; drop it (with any
    connections still open) on exit."""
    admin_url = pg_test_url()
    name = f"telescope_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def fresh_postgres_schema(database_url: URL) -> str:
    """A new, empty schema in `database_url`; returns a URL string whose connections
    use it (through search_path), so tests never see each other's tables."""
    schema = f"t_{secrets.token_hex(6)}"
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    url = database_url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)
