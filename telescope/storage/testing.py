"""Test helpers for running the same storage tests on SQLite and PostgreSQL.

Like optuna's `testing/storages.py`, these live in the package so every test
module (storage, query, the sweep driver) can parametrize over backends.
PostgreSQL tests run against `TELESCOPE_TEST_PG_URL` (default: the local
server, database `test`); each test module gets a throwaway database and each
test its own schema. An unreachable server fails the tests loudly, unless
TELESCOPE_SKIP_PG=1.

In a test module, `from telescope.storage.testing import db_url, pg_database`
runs every test that asks for `db_url` once per backend. Only tests import this
module (it needs pytest).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from telescope.storage.database import resolve_url

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



@pytest.fixture(scope="module")
def pg_database() -> Iterator[URL]:
    if postgres_skipped():
        pytest.skip("TELESCOPE_SKIP_PG=1")
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database URL with no tables yet: a SQLite file in tmp_path, or a fresh schema
    in the module's throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'telescope.db'}"
    return fresh_postgres_schema(request.getfixturevalue("pg_database"))
