"""The sweep database: one conformance suite run on SQLite and on PostgreSQL, plus `telescope status`."""

from __future__ import annotations

import importlib.util
import json
import math
import sqlite3

import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from telescope.cli import status as status_cli
from telescope.cli.common import TelescopeGroup
from telescope.cli.main import app
from telescope.errors import StorageError
from telescope.spec import Status, TrialResult, TrialSpec
from telescope.storage.database import Database
from telescope.storage.rows import config_hash
from telescope.storage.schema import SCHEMA_VERSION
from telescope.storage.urls import resolve_url

CONFIG = {"search": {"m0": 5, "lr": [1e-3, 1e-1]}, "widths": {"base": 64, "calibration": 256}}


@pytest.fixture
def db(db_url):
    with Database(db_url) as database:
        yield database


def spec(lr: float, wd: float = 0.1, width: int = 64, seed: int = 0) -> TrialSpec:
    return TrialSpec(width=width, base_width=64, lr=lr, weight_decay=wd, seed=seed)


def new_sweep(db: Database, name: str = "demo", config=CONFIG) -> None:
    db.create_sweep(name, config, parametrization="paper", base_width=64, calibration_width=256, target_width=1024)


def result(val_loss: float, status: Status = Status.COMPLETED, **kw) -> TrialResult:
    return TrialResult(
        status=status,
        train_loss=val_loss + 0.01,
        val_loss=val_loss,
        tokens=1024,
        flops=1e9,
        wall_time=1.5,
        steps=10,
        device="cpu",
        fingerprint={"table": "paper"},
        **kw,
    )


# -- sweeps -----------------------------------------------------------------


def test_sweep_round_trip_with_config_and_hash(db):
    new_sweep(db)
    sweep = db.get_sweep("demo")
    assert sweep.config == CONFIG
    assert sweep.config_hash == config_hash({"widths": CONFIG["widths"], "search": CONFIG["search"]})
    assert sweep.config_hash != config_hash({**CONFIG, "search": {"m0": 3, "lr": [1e-3, 1e-1]}})
    assert (sweep.kind, sweep.status, sweep.base_width, sweep.calibration_width, sweep.target_width) == (
        "sweep",
        "running",
        64,
        256,
        1024,
    )
    assert sweep.created_at.tzinfo is not None and sweep.created_at.utcoffset().total_seconds() == 0
    assert db.get_sweep("other") is None


def test_duplicate_and_invalid_sweep_names_are_refused(db):
    new_sweep(db)
    with pytest.raises(StorageError, match="already exists"):
        new_sweep(db)
    for bad in ("../escape", "a/b", "", "has space"):
        with pytest.raises(StorageError, match="invalid sweep name"):
            new_sweep(db, bad)
    assert [s.name for s in db.list_sweeps()] == ["demo"]


def test_update_sweep_status_and_result(db):
    new_sweep(db)
    db.create_sweep("check", {}, kind="transfer-check", parametrization="muon", base_width=64, calibration_width=128)
    db.update_sweep("demo", status="completed", result={"lr": 0.03, "weight_decay": 0.1})
    demo = db.get_sweep("demo")
    assert demo.status == "completed" and demo.result == {"lr": 0.03, "weight_decay": 0.1}
    assert demo.updated_at >= demo.created_at
    assert [(s.name, s.kind) for s in db.list_sweeps()] == [("demo", "sweep"), ("check", "transfer-check")]
    with pytest.raises(StorageError, match=r"no sweep named 'nope'.*known sweeps: check, demo"):
        db.update_sweep("nope", status="failed")


# -- levels -----------------------------------------------------------------


def test_level_plan_and_outcome(db):
    new_sweep(db)
    grid = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.02, "weight_decay": 0.1}]
    db.plan_level("demo", 0, width=64, grid=grid)
    assert db.get_level("demo", 0).status == "planned"
    db.start_level("demo", 0)
    started = db.get_level("demo", 0).started_at
    db.finish_level("demo", 0, best={"lr": 0.02, "weight_decay": 0.1}, best_loss=1.9, warnings=["best on edge"])
    db.plan_level("demo", 0, width=64, grid=grid)  # re-planning on resume keeps the outcome
    db.start_level("demo", 0)
    level = db.get_level("demo", 0)
    assert level.grid == grid and level.width == 64 and level.started_at == started
    assert (level.best_lr, level.best_weight_decay, level.best_muon_lr_ratio, level.best_loss) == (0.02, 0.1, None, 1.9)
    assert level.best == {"lr": 0.02, "weight_decay": 0.1}
    assert level.warnings == ["best on edge"]
    db.finish_level("demo", 0, best={"lr": 0.02, "weight_decay": 0.1}, best_loss=float("inf"))
    assert db.get_level("demo", 0).best_loss is None and db.get_level("demo", 0).status == "completed"
    with pytest.raises(StorageError, match="no level 3"):
        db.finish_level("demo", 3, best=None, best_loss=None)
    with pytest.raises(StorageError, match="no sweep named"):
        db.plan_level("nope", 0, width=64, grid=grid)


# -- trials -----------------------------------------------------------------


def test_add_trials_is_idempotent_by_key(db):
    new_sweep(db)
    db.plan_level("demo", 0, width=64, grid=[])
    batch = [(f"L0-{i}", spec(0.01 * (i + 1))) for i in range(4)]
    assert db.add_trials("demo", 0, batch) == 4
    db.mark_running("demo", ["L0-0"])
    db.record_results("demo", [("L0-0", result(2.0))])
    assert db.add_trials("demo", 0, batch + [("L0-9", spec(0.5))]) == 1
    trials = db.trials("demo")
    assert [t.key for t in trials] == ["L0-0", "L0-1", "L0-2", "L0-3", "L0-9"]
    assert trials[0].status is Status.COMPLETED and trials[0].val_loss == 2.0  # re-adding did not reset it
    assert trials[1].spec == batch[1][1] and trials[1].lr == pytest.approx(0.02)
    new_sweep(db, "other")  # keys are unique per sweep, not globally
    assert db.add_trials("other", 0, batch[:1]) == 1


def test_running_results_and_non_finite_losses(db):
    new_sweep(db)
    db.add_trials("demo", 0, [("a", spec(0.01)), ("b", spec(0.1)), ("c", spec(1.0)), ("d", spec(3.0))])
    db.mark_running("demo", ["a", "b", "c"])
    db.mark_running("demo", ["c"])  # retried once
    db.record_results(
        "demo",
        [
            ("a", result(2.5)),
            ("b", result(2.1)),
            ("c", TrialResult(Status.DIVERGED, train_loss=math.nan, val_loss=math.inf, steps=3)),
            ("d", TrialResult(Status.FAILED, error="Traceback...\nRuntimeError: CUDA out of memory")),
        ],
    )
    by_key = {t.key: t for t in db.trials("demo")}
    assert by_key["a"].result() == result(2.5)
    assert (by_key["c"].status, by_key["c"].train_loss, by_key["c"].val_loss) == (Status.DIVERGED, None, None)
    assert by_key["c"].attempts == 2 and by_key["a"].attempts == 1
    assert by_key["d"].error.endswith("CUDA out of memory") and by_key["d"].attempts == 1
    assert by_key["a"].fingerprint == {"table": "paper"}
    assert by_key["a"].started_at <= by_key["a"].finished_at
    assert by_key["a"].finished_at.tzinfo is not None
    counts = db.trial_counts("demo")
    assert counts[Status.COMPLETED] == 2 and counts[Status.DIVERGED] == 1 and counts[Status.FAILED] == 1
    assert [t.key for t in db.trials("demo", status=[Status.DIVERGED, Status.FAILED])] == ["c", "d"]
    with pytest.raises(StorageError, match="no trials"):
        db.record_results("demo", [("zzz", result(1.0))])


def test_swept_values_are_plain_sql_columns(db, db_url):
    new_sweep(db)
    db.add_trials("demo", 0, [("a", spec(0.01, 0.1)), ("b", spec(0.03, 0.2)), ("c", spec(0.1, 0.3))])
    db.record_results(
        "demo", [("a", result(2.5)), ("b", result(2.1)), ("c", TrialResult(Status.DIVERGED, val_loss=math.nan))]
    )
    engine = create_engine(resolve_url(db_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT lr, weight_decay, val_loss, status FROM trials ORDER BY val_loss")).all()
    engine.dispose()
    finite = [r for r in rows if r.val_loss is not None]
    assert [(r.lr, r.weight_decay, r.val_loss) for r in finite] == [(0.03, 0.2, 2.1), (0.01, 0.1, 2.5)]
    assert [(r.lr, r.status) for r in rows if r.val_loss is None] == [(0.1, "diverged")]


def test_level_filter_and_reset_running_for_resume(db):
    new_sweep(db)
    db.add_trials("demo", 0, [("L0-a", spec(0.01)), ("L0-b", spec(0.02))])
    db.add_trials("demo", 1, [("L1-a", spec(0.01, width=128)), ("L1-b", spec(0.02, width=128))])
    db.mark_running("demo", ["L0-a", "L0-b", "L1-a"])
    db.record_results("demo", [("L0-a", result(2.0)), ("L0-b", result(2.2))])
    assert db.reset_running("demo") == 1  # the driver was killed while L1-a ran
    level1 = db.trials("demo", level=1)
    assert [(t.key, t.status, t.started_at) for t in level1] == [
        ("L1-a", Status.PENDING, None),
        ("L1-b", Status.PENDING, None),
    ]
    assert level1[0].attempts == 1
    assert all(t.status is Status.COMPLETED for t in db.trials("demo", level=0))
    assert db.reset_running("demo") == 0


def test_summaries_and_delete(db):
    new_sweep(db)
    new_sweep(db, "empty")
    db.plan_level("demo", 0, width=64, grid=[{"lr": 0.01}])
    db.plan_level("demo", 1, width=128, grid=[{"lr": 0.01}])
    db.add_trials("demo", 0, [("a", spec(0.01)), ("b", spec(0.02))])
    db.record_results("demo", [("a", result(2.0)), ("b", TrialResult(Status.FAILED, error="boom"))])
    db.finish_level("demo", 0, best={"lr": 0.01}, best_loss=2.0)
    summary = {s.name: s for s in db.sweep_summaries()}
    demo = summary["demo"]
    assert (demo.levels_done, demo.levels_planned, demo.trials_done, demo.trials_total, demo.best_loss) == (
        1,
        2,
        2,
        2,
        2.0,
    )
    assert (summary["empty"].trials_total, summary["empty"].best_loss) == (0, None)
    db.delete_sweep("demo")
    assert db.get_sweep("demo") is None and db.trials("demo") == [] and db.levels("demo") == []


def test_reopening_keeps_everything(db_url):
    with Database(db_url) as db:
        new_sweep(db)
        db.add_trials("demo", 0, [("a", spec(0.01))])
    with Database(db_url, create=False) as db:
        assert [t.key for t in db.trials("demo")] == ["a"]


# -- opening ----------------------------------------------------------------


def test_incompatible_schema_version_is_refused(db_url):
    Database(db_url).close()
    engine = create_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE telescope_version SET schema_version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(StorageError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade telescope.*--db") as err:
        Database(db_url)
    assert "\n" not in str(err.value)


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_trials(db_url):
    with Database(db_url) as db:
        db.create_sweep("demo", {}, parametrization="paper", base_width=16, calibration_width=32)
        db.add_trials("demo", 0, [("a", TrialSpec(width=16, base_width=16, lr=0.01, weight_decay=0.1))])
    engine = create_engine(resolve_url(db_url))
    with engine.begin() as conn:  # as telescope 0.1 left it: no content key, no reuse
        conn.execute(text("DROP INDEX ix_trials_content_key"))
        conn.execute(text("ALTER TABLE trials DROP COLUMN content_key"))
        conn.execute(text("ALTER TABLE trials DROP COLUMN reused_from"))
        conn.execute(text("UPDATE telescope_version SET schema_version = 1"))
    with Database(db_url, create=False) as db:
        assert [(t.key, t.content_key, t.reused_from) for t in db.trials("demo")] == [("a", None, None)]
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT schema_version FROM telescope_version")) == SCHEMA_VERSION
    engine.dispose()


def test_foreign_tables_and_missing_database_are_refused(db_url):
    with pytest.raises(StorageError, match="no telescope (tables|database)"):
        Database(db_url, create=False)
    engine = create_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE trials (id INTEGER PRIMARY KEY, note TEXT)"))
    engine.dispose()
    with pytest.raises(StorageError, match="not a telescope database"):
        Database(db_url)


def test_missing_sqlite_file_is_not_created_without_create(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="no telescope database"):
        Database(str(path), create=False)
    assert not path.exists()


def test_sqlite_uses_wal_and_plain_paths(tmp_path):
    path = tmp_path / "plain.db"
    with Database(str(path)) as db:  # a bare path means a SQLite file
        new_sweep(db)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u@localhost/x", "unsupported database 'mysql'"),
        ("postgresql://alice:hunter2@127.0.0.1:1/x", "cannot open database postgresql://alice:\\*\\*\\*@"),
        ("sqlite:////nonexistent-folder/t.db", "folder /nonexistent-folder does not exist"),
    ],
)
def test_bad_urls_give_one_line_without_password(url, message):
    with pytest.raises(StorageError, match=message) as err:
        Database(url)
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_postgres_urls_use_psycopg3_and_psycopg2_only_when_installed(monkeypatch):
    assert resolve_url("postgresql://u@h/x").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql+psycopg://u@h/x").drivername == "postgresql+psycopg"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real_find_spec(name, *a)
    )
    with pytest.raises(
        StorageError, match="needs psycopg2, which is not installed.*write postgresql://alice:\\*\\*\\*@h/x"
    ) as err:
        Database("postgresql+psycopg2://alice:hunter2@h/x")
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("just some notes, not SQLite\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StorageError, match="is damaged or not a SQLite file"):
        Database(str(path))
    assert path.read_bytes() == before


def test_a_damaged_database_is_refused_read_only_and_left_as_it_was(tmp_path):
    path = tmp_path / "damaged.db"
    with Database(str(path)) as db:
        db.create_sweep("s", {"x": 1}, parametrization="paper", base_width=16, calibration_width=32)
    content = bytearray(path.read_bytes())
    page = 4096
    for i in range(page, len(content), page):  # every page but the first: its b-tree headers
        content[i : i + 16] = bytes(range(200, 216))
    path.write_bytes(bytes(content))
    wal = path.with_name("damaged.db-wal")
    before = path.read_bytes(), wal.read_bytes() if wal.exists() else b""
    for args in (["status"], ["status", "s"], ["export", "s"]):
        out = CliRunner().invoke(app, [*args, "--db", str(path)])
        assert out.exit_code == 2 and out.stderr.startswith("error: database ") and "is damaged" in out.stderr, (
            out.output
        )
        assert len(out.stderr.strip().splitlines()) == 1
    assert (path.read_bytes(), wal.read_bytes() if wal.exists() else b"") == before  # nothing checkpointed


# -- telescope status -------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer(cls=TelescopeGroup)
    app.command("status")(status_cli.status)
    app.command("noop")(lambda: None)  # two commands keep `status` a subcommand
    return app


def test_status_lists_sweeps_then_shows_one(db, db_url):
    new_sweep(db)
    db.plan_level("demo", 0, width=64, grid=[{"lr": 0.01}, {"lr": 0.02}])
    db.add_trials("demo", 0, [("L0-a", spec(0.01)), ("L0-b", spec(0.02))])
    db.record_results("demo", [("L0-a", result(2.0))])
    db.finish_level("demo", 0, best={"lr": 0.01, "weight_decay": 0.1}, best_loss=2.0, warnings=["edge"])
    runner = CliRunner()
    listed = runner.invoke(_app(), ["status", "--db", db_url, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == [
        {
            "name": "demo",
            "kind": "sweep",
            "status": "running",
            "levels": "1/1",
            "trials": "1/2",
            "best_loss": 2.0,
            "created": db.get_sweep("demo").created_at.isoformat(timespec="seconds"),
        }
    ]
    trials = runner.invoke(_app(), ["status", "demo", "--db", db_url, "--format", "json"])
    assert [(t["trial_key"], t["status"], t["val_loss"]) for t in json.loads(trials.stdout)] == [
        ("L0-a", "completed", 2.0),
        ("L0-b", "pending", None),
    ]
    levels = runner.invoke(_app(), ["status", "demo", "--db", db_url, "--format", "csv", "--levels"])
    assert levels.stdout.splitlines()[0].startswith("level,width,points,status,trials,best_lr")
    assert levels.stdout.splitlines()[1].startswith("0,64,2,completed,1/2,0.01,0.1,,2.0,edge")
    table = runner.invoke(_app(), ["status", "demo", "--db", db_url])
    assert table.exit_code == 0 and "demo: levels" in table.stdout and "demo: trials" in table.stdout


def test_status_unknown_sweep_names_the_known_ones(db, db_url):
    new_sweep(db)
    out = CliRunner().invoke(_app(), ["status", "nope", "--db", db_url])
    assert out.exit_code == 2
    assert "no sweep named 'nope'" in out.stderr and "known sweeps: demo" in out.stderr
    assert out.stdout == ""


def test_status_without_a_database_writes_nothing(tmp_path):
    out = CliRunner().invoke(_app(), ["status", "--db", str(tmp_path / "none.db")])
    assert out.exit_code == 2 and "no telescope database" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_drivers_starting_together_on_a_fresh_database_create_the_tables_once(db_url):
    import subprocess
    import sys
    import time

    start = time.time() + 3  # every process opens the database at this moment
    code = (
        "import sys, time\nfrom telescope.storage.database import Database\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\nDatabase(sys.argv[1]).close()\n"
    )
    drivers = [
        subprocess.Popen([sys.executable, "-c", code, db_url, str(start)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for driver in drivers:
        assert driver.wait(timeout=60) == 0, driver.stderr.read()
    with Database(db_url, create=False) as db:
        assert db.list_sweeps() == []


def test_a_sweep_is_leased_to_one_driver_at_a_time(db_url, tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom telescope.storage.database import Database\n"
            "db = Database(sys.argv[1])\nwith db.lease('demo'):\n    print('held', flush=True)\n    time.sleep(60)\n",
            db_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with Database(db_url) as db:
            with pytest.raises(StorageError, match="sweep 'demo' is being run by another telescope process"):
                with db.lease("demo"):
                    pass
            with db.lease("other"):  # another sweep of the same database is free
                pass
        holder.kill()
        holder.wait()
        with Database(db_url) as db, db.lease("demo"):  # the lease went with the process
            pass
    finally:
        holder.kill()
