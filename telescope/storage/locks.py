"""Locks between processes: a PostgreSQL session advisory lock, or on SQLite a byte-range
lock on `DB.lock` beside the file. Either goes with the process that holds it, however
it ends."""

from __future__ import annotations

import fcntl
import hashlib
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from telescope.errors import StorageError
from telescope.storage.urls import sqlite_path

CREATE_LOCK_KEY = 0  # the lock taken while creating the tables (sweep leases use keys >= 1)


class Taken(Exception):
    """Another process holds the lock."""


def lease_key(sweep: str) -> int:
    """The lock key of a sweep's lease: a positive 62-bit number from its name."""
    return 1 + (int.from_bytes(hashlib.sha256(f"telescope-sweep:{sweep}".encode()).digest()[:8], "big") >> 2)


class ProcessLocks:
    """The locks one Database takes, by integer key."""

    def __init__(self, url: URL, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._lock_file: BinaryIO | None = None

    @contextmanager
    def exclusive(self, key: int, wait: bool) -> Iterator[None]:
        """Hold lock `key`; raises Taken when another process holds it and not `wait`."""
        if self.url.get_backend_name() == "postgresql":
            with self.engine.connect() as conn:
                if wait:
                    conn.scalar(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                elif not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
                    raise Taken
                conn.commit()
                try:
                    yield
                finally:
                    conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
            return
        path = sqlite_path(self.url)
        if path is None:  # an in-memory database belongs to this process alone
            yield
            return
        # One descriptor for the Database's life: closing any descriptor of a file drops every
        # lock the process holds on it, nested ones (a sweep and its check) included.
        if self._lock_file is None:
            try:
                self._lock_file = open(path.with_name(path.name + ".lock"), "a+b")
            except OSError as e:
                raise StorageError(f"cannot lock {path}: {e.strerror}") from None
        try:
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, key)
        except OSError:
            raise Taken from None
        try:
            yield
        finally:
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN, 1, key)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
