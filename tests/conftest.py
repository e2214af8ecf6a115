"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from pg import BACKENDS, fresh_postgres_schema, postgres_skipped, throwaway_postgres_database
from sqlalchemy.engine import URL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """`ray start --head` on loopback, in its own temp dir and process group, so
    that teardown kills exactly its processes (`ray stop` would kill every Ray
    on the machine)."""
    pytest.importorskip("ray")
    temp_dir = tmp_path_factory.mktemp("raytmp")
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--disable-usage-stats",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("ray start --head did not come up")
                time.sleep(0.2)
        yield head, f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        for pid in _processes_mentioning(str(temp_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def smallest_sweep_db(tmp_path_factory) -> str:
    """The URL of a SQLite database holding one finished sweep named `micro` (micro.SMALLEST:
    widths 16 -> 32, target 64, table `paper`)."""
    from micro import SMALLEST, run_micro_sweep

    root = tmp_path_factory.mktemp("smallest-sweep")
    url = f"sqlite:///{root / 'sweep.db'}"
    run_micro_sweep(url, root / "store", **SMALLEST)
    return url


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
