"""A team PostgreSQL server that goes away in the middle of a sweep: the sweep waits for it
and finishes, no trial is trained twice, a second driver is refused while the first one is
cut off, and past --db-retry-seconds the sweep stops with one line and resumes on rerun.

The server restarted here is a private cluster made for this module (never the shared
test server): it needs root and the Debian PostgreSQL tools (pg_createcluster)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from micro import SMALLEST, sweep_command, wait_for, write_micro_config

from telescope.errors import StorageError
from telescope.storage.database import Database

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("pg_createcluster") and shutil.which("pg_ctlcluster")),
    reason="restarting a private PostgreSQL cluster needs root and pg_createcluster/pg_ctlcluster",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """(pg_ctlcluster's version and name, the URL of its `postgres` database), dropped at the end."""
    binaries = Path("/usr/lib/postgresql")
    versions = sorted(binaries.iterdir(), key=lambda p: int(p.name)) if binaries.is_dir() else []
    if not versions:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    version, name, port = versions[-1].name, f"telescope_{secrets.token_hex(4)}", _free_port()
    data = Path("/tmp") / f"{name}-data"
    subprocess.run(
        ["pg_createcluster", version, name, "-p", str(port), "-d", str(data), "--", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, capture_output=True)
        yield (version, name), f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _ctl(cluster_id: tuple[str, str], action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", *cluster_id, action, *(["-m", "fast"] if action == "stop" else [])],
        check=True,
        capture_output=True,
    )


def _sweep(config: Path, url: str, store: Path, name: str, log: Path, retry_seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_command(config, url, store, "--name", name, "--db-retry-seconds", str(retry_seconds)),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def _finished(url: str, sweep: str) -> int:
    try:
        with Database(url, create=False) as db:
            return sum(t.finished for t in db.trials(sweep))
    except StorageError:  # no tables yet
        return 0


def _attempts(url: str, sweep: str) -> list[tuple[str, int]]:
    with Database(url, create=False) as db:
        return [(t.status.value, t.attempts) for t in db.trials(sweep)]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # 2x2 then 1 trial, one at a time and not packed, so that one trial is in flight when the server goes.
    search = {"lr": {"lo": 0.01, "hi": 0.04, "points": 2}, "weight_decay": {"lo": 0.05, "hi": 0.1, "points": 2}}
    sections = {
        **SMALLEST,
        "train": {**SMALLEST["train"], "steps": 6},
        "search": search,
        "executor": {"max_concurrent": 1, "pack": 1},
    }
    return write_micro_config(tmp_path / "sweep.toml", **sections)


def test_a_sweep_rides_through_a_restart_and_a_second_driver_is_refused(cluster, config, tmp_path):
    cluster_id, url = cluster
    log = tmp_path / "first.log"
    first = _sweep(config, url, tmp_path / "store", "ride", log, retry_seconds=60)
    try:
        wait_for(lambda: first.poll() is not None or _finished(url, "ride") >= 2)
        first.send_signal(signal.SIGSTOP)
        _ctl(cluster_id, "stop")
        first.send_signal(signal.SIGCONT)  # it finds the server gone, and waits
        wait_for(lambda: "database unavailable, retrying (" in log.read_text())
        first.send_signal(signal.SIGSTOP)  # cut off, so it cannot claim the sweep again yet
        _ctl(cluster_id, "start")
        second = subprocess.run(
            sweep_command(config, url, tmp_path / "store", "--name", "ride"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "when the database restarted" in second.stderr, second.stderr
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == 0, log.read_text()
    finally:
        first.kill()
        first.wait()
    assert "Traceback" not in log.read_text()
    trials = _attempts(url, "ride")
    assert trials and all(status == "completed" for status, _ in trials)
    assert sorted(attempts for _, attempts in trials)[:-1] == [1] * (len(trials) - 1)  # at most one ran twice


def test_past_the_retry_limit_a_sweep_stops_in_one_line_and_resumes(cluster, config, tmp_path):
    cluster_id, url = cluster
    log = tmp_path / "stopped.log"
    store = tmp_path / "store"
    driver = _sweep(config, url, store, "gives-up", log, retry_seconds=2)
    try:
        wait_for(lambda: driver.poll() is not None or _finished(url, "gives-up") >= 1)
        driver.send_signal(signal.SIGSTOP)
        _ctl(cluster_id, "stop")
        driver.send_signal(signal.SIGCONT)
        assert driver.wait(timeout=60) == 2
    finally:
        driver.kill()
        driver.wait()
        _ctl(cluster_id, "start")
    lines = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], log.read_text()
    assert "Traceback" not in log.read_text()
    done_before = _finished(url, "gives-up")
    rerun = _sweep(config, url, store, "gives-up", tmp_path / "rerun.log", retry_seconds=60)
    assert rerun.wait(timeout=120) == 0, (tmp_path / "rerun.log").read_text()
    trials = _attempts(url, "gives-up")
    assert all(status == "completed" for status, _ in trials) and len(trials) > done_before
    assert sorted(attempts for _, attempts in trials)[:-1] == [1] * (len(trials) - 1)
