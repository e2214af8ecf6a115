"""The pieces that keep a sweep safe on a team database: a driver that lost its lease
writes nothing, transient errors are retried up to the limit and then stop in one line,
and the live view says the database is away."""

from __future__ import annotations

import io

import psycopg
import pytest
from pg import fresh_postgres_schema
from rich.console import Console
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from telescope.errors import StorageError
from telescope.progress import SweepProgress, database_waiting
from telescope.spec import TrialSpec
from telescope.storage.database import Database
from telescope.storage.retry import Retrier, is_transient
from telescope.storage.urls import resolve_url


def test_a_driver_whose_lease_was_taken_over_writes_nothing(pg_database):
    url = fresh_postgres_schema(pg_database)
    with Database(url) as db, db.lease("demo"):
        db.create_sweep("demo", {}, parametrization="paper", base_width=64, calibration_width=64)
        db.plan_level("demo", 0, width=64, grid=[{"lr": 0.01}])
        engine = create_engine(resolve_url(url))
        with engine.begin() as conn:  # what a second driver does once the lease expired
            conn.execute(text("UPDATE telescope_leases SET owner = 'other', host = 'elsewhere', pid = 7"))
        engine.dispose()
        with pytest.raises(StorageError, match=r"^sweep 'demo' was taken over by elsewhere pid 7 .* this driver stops"):
            db.add_trials("demo", 0, [("k", TrialSpec(64, 64, 0.01, 0.1))])
        assert db.trials("demo") == []


def _operational(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


def test_transient_errors_are_told_from_the_others():
    assert is_transient(
        _operational('connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused')
    )
    assert is_transient(_operational("FATAL: the database system is shutting down"))
    assert not is_transient(_operational('FATAL: password authentication failed for user "bob"'))


def test_the_retrier_waits_then_stops_in_one_line():
    waits: list[float | None] = []
    calls = []

    def operation():
        calls.append(1)
        if len(calls) < 3:
            raise _operational("server closed the connection unexpectedly")
        return "done"

    assert Retrier(5, on_wait=waits.append).run(operation) == "done"
    assert waits[0] == pytest.approx(0, abs=0.1) and waits[-1] is None and len(waits) == 3

    def down():
        raise _operational("Connection refused")

    with pytest.raises(StorageError, match="unavailable for 1 s, so this run stopped; rerun the same") as stopped:
        Retrier(1, describe=lambda e: "database X").run(down)
    assert "\n" not in str(stopped.value)


def test_the_live_view_says_the_database_is_away():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with SweepProgress([(9, 1.0)], console=console) as progress:
        database_waiting(23.4)
        assert progress.notice == "database unavailable, retrying (23 s)"
        database_waiting(None)
        assert progress.notice == ""
    log = Console(file=io.StringIO())
    database_waiting(5, log)  # no live view: a line
    assert log.file.getvalue() == "database unavailable, retrying (5 s)\n"
