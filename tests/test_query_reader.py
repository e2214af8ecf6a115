"""`telescope query` on PostgreSQL as a superuser, against objects someone created earlier: it
runs as telescope_reader, so views, functions, *_to_xml, large objects, dblink and server
files are refused, and nothing is changed, killed, written or read."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pg import fresh_postgres_schema
from sqlalchemy import create_engine, text

from telescope.errors import StorageError
from telescope.spec import Status, TrialResult, TrialSpec
from telescope.storage.database import Database
from telescope.storage.query import run_query
from telescope.storage.urls import resolve_url

LOCK_KEY = 424242


def _execute(url: str, *statements: str) -> list:
    engine = create_engine(resolve_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return [
                conn.execute(text(s)).all() if s.lstrip().upper().startswith("SELECT") else conn.execute(text(s))
                for s in statements
            ][-1:]
    finally:
        engine.dispose()


def _scalar(url: str, sql: str):
    return _execute(url, sql)[0][0][0]


@pytest.fixture(scope="module")
def attack(pg_database, tmp_path_factory):
    """A telescope database (one finished trial) in its own schema, a victim session, and
    the traps a superuser set beforehand: views and functions with side effects."""
    url = fresh_postgres_schema(pg_database)
    with Database(url) as db:
        db.create_sweep("demo", {}, parametrization="paper", base_width=64, calibration_width=64)
        db.plan_level("demo", 0, width=64, grid=[{"lr": 0.01}])
        db.add_trials("demo", 0, [("k", TrialSpec(64, 64, 0.01, 0.1))])
        db.record_results("demo", [("k", TrialResult(Status.COMPLETED, val_loss=2.0))])
    victim_name = f"telescope-victim-{secrets.token_hex(4)}"
    file_marker = Path("/tmp") / f"telescope-lo-{secrets.token_hex(6)}"
    schema = _scalar(url, "SELECT current_schema()")
    database = resolve_url(url).database
    dblink = _scalar(url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'") > 0
    _execute(
        url,
        "CREATE TABLE marker (x int)",
        f"CREATE VIEW v_term AS SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity "
        f"WHERE application_name = '{victim_name}'",
        "CREATE VIEW v_file AS SELECT pg_read_file('/etc/hostname') AS content",
        f"CREATE VIEW v_lo AS SELECT lo_export(lo_from_bytea(0, 'x'::bytea), '{file_marker}') AS written",
        f"CREATE FUNCTION f_lock() RETURNS int STABLE LANGUAGE sql AS "
        f"$$ SELECT 1 FROM (SELECT pg_advisory_lock({LOCK_KEY})) s $$",
        "CREATE FUNCTION f_conf() RETURNS text STABLE LANGUAGE sql AS "
        "$$ SELECT set_config('work_mem', '77MB', false) $$",
        "CREATE VIEW v_lock AS SELECT f_lock() AS locked",
        "CREATE VIEW v_conf AS SELECT f_conf() AS setting",
    )
    if dblink:
        _execute(
            url,
            "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public",
            f"CREATE VIEW v_dblink AS SELECT public.dblink_exec('host=127.0.0.1 port={resolve_url(url).port or 5432} "
            f"user=postgres dbname={database}', 'INSERT INTO {schema}.marker VALUES (1)') AS r",
        )
    victim = psycopg.connect(
        f"host={resolve_url(url).host} port={resolve_url(url).port or 5432} user=postgres dbname={database} "
        f"application_name={victim_name}",
        autocommit=True,
    )
    try:
        yield {"url": url, "victim": victim, "file": file_marker, "dblink": dblink}
    finally:
        victim.close()


TRAPS = {
    "view over pg_terminate_backend": "SELECT * FROM v_term",
    "table_to_xml over that view": "SELECT table_to_xml('v_term'::regclass, true, false, '')",
    "schema_to_xml": "SELECT schema_to_xml(current_schema(), true, false, '')",
    "view over pg_read_file": "SELECT * FROM v_file",
    "pg_read_file": "SELECT pg_read_file('/etc/hostname')",
    "server settings files": "SELECT * FROM pg_file_settings",
    "server access rules": "SELECT * FROM pg_hba_file_rules",
    "view over lo_export": "SELECT * FROM v_lo",
    "lo_export": "SELECT lo_export(lo_from_bytea(0, 'x'::bytea), '/tmp/telescope-lo-direct')",
    "STABLE function taking an advisory lock": "SELECT f_lock()",
    "view over it": "SELECT * FROM v_lock",
    "STABLE function calling set_config": "SELECT f_conf()",
    "query_to_xml running a lock": f"SELECT query_to_xml('SELECT pg_advisory_lock({LOCK_KEY})', true, false, '')",
    "view over dblink_exec": "SELECT * FROM v_dblink",
}


@pytest.mark.parametrize("name", TRAPS)
def test_objects_made_earlier_are_refused_with_nothing_changed(attack, name):
    url = attack["url"]
    if name == "view over dblink_exec" and not attack["dblink"]:
        pytest.skip("the dblink extension is not available on the test server")
    trials_before = _execute(url, "SELECT * FROM trials")[0]
    objects_before = _scalar(url, "SELECT count(*) FROM pg_largeobject_metadata")
    with pytest.raises(StorageError, match=r"^refused: ") as refused:
        run_query(TRAPS[name], url)
    assert "\n" not in str(refused.value)
    attack["victim"].execute("SELECT 1")  # not killed
    assert _execute(url, "SELECT * FROM trials")[0] == trials_before
    assert _scalar(url, "SELECT count(*) FROM marker") == 0  # dblink wrote nothing
    assert _scalar(url, "SELECT count(*) FROM pg_largeobject_metadata") == objects_before
    assert not attack["file"].exists() and not Path("/tmp/telescope-lo-direct").exists()
    assert _scalar(url, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {LOCK_KEY}") == 0


def test_telescope_tables_still_read(attack):
    sql = "SELECT t.trial_key, t.val_loss, s.name FROM trials t JOIN sweeps s ON s.name = t.sweep"
    result = run_query(sql, attack["url"])
    assert result.rows == [("k", 2.0, "demo")]
    assert run_query("SELECT current_user", attack["url"]).rows == [("telescope_reader",)]


def test_a_superuser_without_the_reader_is_refused_until_it_is_granted(pg_database):
    url = fresh_postgres_schema(pg_database)
    Database(url).close()
    _execute(url, "REVOKE SELECT ON trials FROM telescope_reader")  # as if made before telescope had the role
    with pytest.raises(StorageError, match=r"^refused: .* run `telescope db grant-reader --db URL` once"):
        run_query("SELECT count(*) FROM trials", url)
    granted = subprocess.run(
        [sys.executable, "-m", "telescope", "db", "grant-reader", "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert granted.returncode == 0, granted.stderr
    assert "telescope_reader" in granted.stdout and len(granted.stdout.strip().splitlines()) == 1
    assert run_query("SELECT count(*) FROM trials", url).rows == [(0,)]
