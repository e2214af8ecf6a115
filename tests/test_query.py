"""`telescope query`: read-only SQL over the database (SQLite and PostgreSQL) and the step metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from telescope.cli import query as query_cli
from telescope.cli.common import TelescopeGroup
from telescope.errors import StorageError
from telescope.spec import Status, StepMetrics, TrialResult, TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.query import ONE_STATEMENT, run_query
from telescope.storage.urls import resolve_url

POINTS = {  # key: (level, width, lr, val_loss)
    "L0-a": (0, 64, 0.01, 2.4),
    "L0-b": (0, 64, 0.03, 2.1),
    "L0-c": (0, 64, 0.1, None),
    "L1-a": (1, 128, 0.02, 1.95),
    "L1-b": (1, 128, 0.03, 1.9),
}


@pytest.fixture
def sweep_db(db_url, tmp_path) -> tuple[str, Path]:
    """A finished two-level sweep with step metrics; returns (db URL, metrics store)."""
    store = MetricsStore(tmp_path / "metrics")
    with Database(db_url) as db:
        db.create_sweep("demo", {"m0": 3}, parametrization="paper", base_width=64, calibration_width=128)
        for level, width, best_lr, best_loss in ((0, 64, 0.03, 2.1), (1, 128, 0.03, 1.9)):
            keys = [k for k, p in POINTS.items() if p[0] == level]
            db.plan_level("demo", level, width=width, grid=[{"lr": POINTS[k][2]} for k in keys])
            db.add_trials("demo", level, [(k, TrialSpec(width, 64, POINTS[k][2], 0.1)) for k in keys])
            db.record_results(
                "demo",
                [
                    (k, TrialResult(Status.COMPLETED if POINTS[k][3] else Status.DIVERGED, val_loss=POINTS[k][3]))
                    for k in keys
                ],
            )
            db.finish_level("demo", level, best={"lr": best_lr, "weight_decay": 0.1}, best_loss=best_loss)
            for k in keys:
                store.write(
                    "demo",
                    level,
                    k,
                    [StepMetrics(s, 64 * (s + 1), 3.0 - 0.1 * s, 0.01, 1.0, 0.1 * s) for s in range(4)],
                )
    return db_url, store.root


def snapshot(url: str) -> object:
    """What must not change: the SQLite file's bytes (and an empty WAL), or every row on PostgreSQL."""
    parsed = resolve_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database)
        wal = path.with_name(path.name + "-wal")
        return hashlib.sha256(path.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0
    engine = create_engine(parsed)
    with engine.connect() as conn:
        state = {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY id")).all() for t in ("sweeps", "levels", "trials")}
        state["version"] = conn.execute(text("SELECT * FROM telescope_version")).all()
    engine.dispose()
    return state


def _app() -> typer.Typer:
    app = typer.Typer(cls=TelescopeGroup)
    app.command("query")(query_cli.query)
    app.command("noop")(lambda: None)  # two commands keep `query` a subcommand
    return app


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(_app(), ["query", *args], input=input)


# -- reading ----------------------------------------------------------------


def test_swept_values_order_by_loss(sweep_db):
    url, _ = sweep_db
    result = run_query(
        "SELECT trial_key, lr, weight_decay, val_loss FROM trials WHERE val_loss IS NOT NULL ORDER BY val_loss", url
    )
    assert result.columns == ["trial_key", "lr", "weight_decay", "val_loss"]
    assert [r[0] for r in result.rows] == ["L1-b", "L1-a", "L0-b", "L0-a"]
    assert result.rows[0][1:] == (0.03, 0.1, 1.9) and not result.truncated


def test_which_point_won_at_each_width(sweep_db):
    url, _ = sweep_db
    out = cli(
        "SELECT l.width, l.best_lr, l.best_loss FROM levels l JOIN sweeps s ON s.name = l.sweep "
        "WHERE s.name = 'demo' ORDER BY l.width",
        "--db",
        url,
        "--format",
        "json",
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [
        {"width": 64, "best_lr": 0.03, "best_loss": 2.1},
        {"width": 128, "best_lr": 0.03, "best_loss": 1.9},
    ]


def test_row_cap_and_csv_and_stdin(sweep_db):
    url, _ = sweep_db
    out = cli(
        "-", "--db", url, "--format", "csv", "--limit", "2", input="SELECT trial_key FROM trials ORDER BY trial_key"
    )
    assert out.exit_code == 0
    assert out.stdout.splitlines() == ["trial_key", "L0-a", "L0-b"]
    assert "first 2 rows" in out.stderr
    assert run_query("SELECT trial_key FROM trials", url, limit=5).truncated is False


def test_duplicate_column_names_are_kept_apart(sweep_db):
    url, _ = sweep_db
    result = run_query(
        "SELECT t.lr, l.best_lr AS lr FROM trials t JOIN levels l ON l.level = t.level WHERE t.trial_key = 'L0-a'", url
    )
    assert result.records() == [{"lr": 0.01, "lr_2": 0.03}]


# -- refusing writes --------------------------------------------------------

WRITES = {
    "insert": "INSERT INTO sweeps (name, kind, status) VALUES ('x', 'sweep', 'running')",
    "update": "UPDATE trials SET lr = 1.0",
    "delete": "DELETE FROM trials",
    "drop": "DROP TABLE trials",
    "create": "CREATE TABLE evil (x INTEGER)",
    "two statements": "SELECT 1; DELETE FROM trials",
}
SQLITE_WRITES = {
    "attach": "ATTACH DATABASE 'evil.db' AS evil",
    "pragma user_version": "PRAGMA user_version = 5",
    "pragma journal_mode": "PRAGMA journal_mode = delete",
    "with delete": "WITH doomed AS (SELECT id FROM trials) DELETE FROM trials WHERE id IN (SELECT id FROM doomed)",
    "vacuum": "VACUUM",
}
POSTGRES_WRITES = {
    "with delete": "WITH doomed AS (DELETE FROM trials RETURNING id) SELECT count(*) FROM doomed",
    "commit then write": "COMMIT; SET default_transaction_read_only = off; DELETE FROM trials",
    "read write": "SET TRANSACTION READ WRITE",
    "sequence": "SELECT nextval('trials_id_seq')",
}


def test_every_write_is_refused_and_the_database_is_unchanged(sweep_db, tmp_path, monkeypatch):
    url, _ = sweep_db
    monkeypatch.chdir(tmp_path)  # where a relative ATTACH would create its file
    backend = resolve_url(url).get_backend_name()
    writes = WRITES | (SQLITE_WRITES if backend == "sqlite" else POSTGRES_WRITES)
    before = snapshot(url)
    for name, sql in writes.items():
        out = cli(sql, "--db", url)
        assert out.exit_code == 2, (name, out.output)
        assert out.stderr.startswith("error: refused") or "query failed" in out.stderr, (name, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
        assert snapshot(url) == before, name
    assert not (tmp_path / "evil.db").exists()
    assert "read-only" in cli(WRITES["delete"], "--db", url).stderr


def test_sql_errors_are_one_line(sweep_db):
    url, _ = sweep_db
    for sql, message in (("SELEC 1", "query failed"), ("SELECT * FROM nope", "query failed"), ("  ", "empty query")):
        out = cli(sql, "--db", url)
        assert out.exit_code == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_time_limit_stops_a_long_query(sweep_db):
    url, _ = sweep_db
    slow = (
        "SELECT count(*) FROM generate_series(1, 1000000000)"
        if resolve_url(url).get_backend_name() == "postgresql"
        else "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    )
    with pytest.raises(StorageError, match="time limit of 0.3 s"):
        run_query(slow, url, timeout=0.3)


def test_missing_database_and_bad_url(tmp_path):
    out = cli("SELECT 1", "--db", str(tmp_path / "none.db"))
    assert out.exit_code == 2 and "no database at" in out.stderr
    assert not (tmp_path / "none.db").exists()
    out = cli("SELECT 1", "--db", "postgresql://bob:s3cret@127.0.0.1:1/x")
    assert out.exit_code == 2 and "cannot connect" in out.stderr and "s3cret" not in out.stderr


# -- step metrics through DuckDB ---------------------------------------------


def test_metrics_are_queryable_and_join_trials(sweep_db):
    url, store = sweep_db
    curve = run_query("SELECT step, train_loss FROM metrics WHERE trial_key = 'L1-b' ORDER BY step", url, store)
    assert curve.engine == "duckdb"
    assert [r[0] for r in curve.rows] == [0, 1, 2, 3] and curve.rows[0][1] == pytest.approx(3.0)
    joined = run_query(
        "SELECT t.width, count(*) AS steps, min(m.train_loss) AS best FROM metrics m "
        "JOIN trials t ON t.sweep = m.sweep AND t.trial_key = m.trial_key "
        "WHERE t.status = 'completed' GROUP BY t.width ORDER BY t.width",
        url,
        store,
    )
    assert joined.records() == [
        {"width": 64, "steps": 8, "best": pytest.approx(2.7)},
        {"width": 128, "steps": 8, "best": pytest.approx(2.7)},
    ]
    levels = run_query("SELECT level, best_lr FROM levels ORDER BY level", url, store, metrics=True)
    assert levels.rows == [(0, 0.03), (1, 0.03)]


def test_metrics_before_any_trial_finished(sweep_db, tmp_path):
    url, _ = sweep_db
    result = run_query("SELECT count(*) AS n FROM metrics", url, tmp_path / "empty-store")
    assert result.rows == [(0,)]


def test_metrics_mode_runs_only_selects(sweep_db, tmp_path):
    url, store = sweep_db
    before = snapshot(url)
    files = sorted(p.read_bytes() for p in store.rglob("*.parquet"))
    for sql in (
        "DELETE FROM metrics",
        "COPY trials TO 'out.csv'",
        "ATTACH 'evil.duckdb'",
        "CREATE TABLE metrics2 AS SELECT * FROM metrics",
        "SELECT 1 FROM metrics; DROP VIEW metrics",
    ):
        out = cli(sql, "--db", url, "--store", str(store), "--metrics")
        assert out.exit_code == 2 and out.stderr.startswith("error: refused"), (sql, out.stderr)
    assert snapshot(url) == before
    assert sorted(p.read_bytes() for p in store.rglob("*.parquet")) == files
    out = cli("SELECT * FROM metrics WHERE", "--db", url, "--store", str(store))
    assert out.exit_code == 2 and "query failed" in out.stderr


# -- one statement at a time (PostgreSQL: the server refuses, through a prepared statement) --

MULTI_STATEMENTS = {
    "select then delete": "SELECT 1; DELETE FROM trials",
    "commit then write": "COMMIT; SET default_transaction_read_only = off; DELETE FROM trials",
    "commit then drop": "COMMIT; DROP TABLE trials",
    "semicolon after a comment": "SELECT 1 -- ; harmless\n; DELETE FROM trials",
    "after a dollar quote": "SELECT $$;$$; UPDATE trials SET lr = 1.0",
}


def test_several_statements_are_refused_with_one_line(sweep_db):
    url, _ = sweep_db
    on_postgres = resolve_url(url).get_backend_name() == "postgresql"
    before = snapshot(url)
    for name, sql in MULTI_STATEMENTS.items():
        out = cli(sql, "--db", url)
        assert out.exit_code == 2, (name, out.output)
        assert len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
        if on_postgres:  # the server refuses the text before running any of it
            assert out.stderr.strip() == f"error: {ONE_STATEMENT}", (name, out.stderr)
        else:  # SQLite refuses the first statement's write (COMMIT) or the second statement
            assert out.stderr.startswith("error: refused"), (name, out.stderr)
        assert snapshot(url) == before, name
    assert run_query("SELECT count(*) FROM trials", url).rows == [(5,)]


@pytest.mark.parametrize(
    "sql, row",
    [
        ("SELECT count(*) AS n FROM trials;", (5,)),
        ("SELECT count(*) AS n FROM trials; -- trailing comment", (5,)),
        ("SELECT 'a;b' AS q, trial_key FROM trials WHERE trial_key = 'L0-a'", ("a;b", "L0-a")),
        ("SELECT 'it''s; fine' AS q", ("it's; fine",)),
        ("SELECT 1 AS n /* ; DELETE FROM trials; */", (1,)),
        ("SELECT 1 AS n -- ; DELETE FROM trials", (1,)),
        ('SELECT count(*) AS "n;m" FROM trials', (5,)),
    ],
)
def test_semicolons_inside_one_statement_are_not_statements(sweep_db, sql, row):
    url, _ = sweep_db
    assert run_query(sql, url).rows == [row]


def test_dollar_quotes_nested_comments_and_empty_statements_on_postgres(sweep_db):
    url, _ = sweep_db
    if resolve_url(url).get_backend_name() != "postgresql":
        pytest.skip("dollar quotes and nested comments are PostgreSQL syntax; sqlite3 counts `; ;` as two")
    before = snapshot(url)
    result = run_query(
        "SELECT $$;$$ AS a, $tag$ ; $$ ; DELETE FROM trials; $tag$ AS b /* ; /* nested ; */ ; */ ; ;", url
    )
    assert result.rows == [(";", " ; $$ ; DELETE FROM trials; ")]
    assert snapshot(url) == before


# -- side effects a read-only transaction lets through (PostgreSQL, as a superuser) --

SIDE_EFFECTS = {
    "program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "server file": "COPY trials TO '{marker}'",
    "read a server file": "SELECT pg_read_file('/etc/hostname')",
    "set a setting": "SELECT set_config('statement_timeout', '0', false)",
    "switch role then run SQL": "SELECT set_config('role', 'postgres', true), query_to_xml('SELECT 1', true, false, "
    "'')",
    "advisory lock": "SELECT pg_advisory_lock(42)",
    "lock a table": "LOCK TABLE trials IN ACCESS SHARE MODE",
    "notify": "NOTIFY telescope",
    "notify through a function": "SELECT pg_notify('telescope', 'x')",
    "kill a backend": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "hidden in a subquery": "SELECT lr FROM trials WHERE lr > (SELECT count(*) FROM pg_ls_dir('/'))",
    "data-modifying WITH": "WITH gone AS (DELETE FROM trials RETURNING 1) SELECT count(*) FROM gone",
    "sequence": "SELECT nextval('trials_id_seq')",
}


@pytest.mark.parametrize("name", SIDE_EFFECTS)
def test_statements_with_side_effects_are_refused_before_they_run(sweep_db, tmp_path, name):
    url, _ = sweep_db
    if resolve_url(url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL statements")
    marker = tmp_path / "ran"
    before = snapshot(url)
    out = cli(SIDE_EFFECTS[name].format(marker=marker), "--db", url)
    assert out.exit_code == 2 and out.stderr.startswith("error: refused: telescope query is read-only"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert snapshot(url) == before


def test_harmless_queries_still_run_on_postgres(sweep_db):
    url, _ = sweep_db
    if resolve_url(url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL statements")
    result = run_query(
        "SELECT t.trial_key, l.level, t.level, random() < 2 AS r, now() IS NOT NULL AS n "
        "FROM trials t JOIN levels l ON l.level = t.level WHERE t.trial_key = 'L1-b';",
        url,
    )
    assert result.columns == ["trial_key", "level", "level_2", "r", "n"]
    assert result.rows == [("L1-b", 1, 1, True, True)]
    assert run_query("VALUES (1, 'a')", url).rows == [(1, "a")]
    assert run_query("TABLE levels", url).columns[:2] == ["id", "sweep"]


def test_metrics_queries_read_no_other_file_and_install_nothing(sweep_db):
    url, store = sweep_db
    for sql in (
        "SELECT * FROM read_text('/etc/hostname') , metrics LIMIT 1",
        "SELECT * FROM read_csv('/etc/passwd') , metrics LIMIT 1",
        "SELECT * FROM 'https://example.org/x.parquet', metrics LIMIT 1",
        "SELECT current_setting('enable_external_access'), * FROM metrics, (FROM read_blob('/etc/hostname'))",
    ):
        with pytest.raises(StorageError, match="disabled by configuration"):
            run_query(sql, url, store)
    with pytest.raises(StorageError, match="refused"):
        run_query("INSTALL httpfs", url, store, metrics=True)
    assert run_query("SELECT count(*) FROM metrics", url, store).rows == [(20,)]


def test_unreadable_metrics_files_are_left_out_and_named(sweep_db):
    url, store = sweep_db
    broken = store / "sweep=demo" / "level=1" / "L1-a.parquet"
    broken.write_bytes(broken.read_bytes()[:40])  # a disk that filled up mid-write
    result = run_query("SELECT count(DISTINCT trial_key) AS n FROM metrics", url, store)
    assert result.rows == [(4,)] and result.skipped_files == (str(broken),)
    out = cli("SELECT count(*) AS n FROM metrics", "--db", url, "--store", str(store))
    assert out.exit_code == 0 and "left out 1 unreadable metrics file" in out.stderr and str(broken) in out.stderr
