"""The lease of a sweep on PostgreSQL: it survives server restarts.

A session advisory lock vanishes when the server restarts, while the driver that held it
lives on and reconnects: a second driver could then run the same sweep. So the lease is
two things: the advisory lock, held by a session the holder keeps open (a live holder is
seen at once, by every user), and a row in `telescope_leases`, kept fresh by a heartbeat,
that outlives a restart. Another driver takes the lease only with the lock, and then
- when the row's holder died while the server kept running (the lock went with it), or
- when the server restarted since the holder's last heartbeat, and the holder's process
  has ended (when it ran on this machine) or its lease has expired: `expires_at` is the
  last heartbeat plus the holder's own --db-retry-seconds and a margin, so a holder still
  waiting for the database is never overtaken.
The holder claims both again after a restart. Before each write the database checks, in
the write's own transaction, that the row is still its own; a driver that lost it stops.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from telescope.storage.locks import CREATE_LOCK_KEY, Taken, lease_key
from telescope.storage.schema import LEASE_TABLE, LeaseModel

HEARTBEAT_S = 2.0
EXPIRY_MARGIN_S = 30.0

_READ = text(
    f"""
    SELECT owner, host, pid, server_started_at = pg_postmaster_start_time() AS same_server,
           ceil(extract(epoch FROM expires_at - now())) AS expires_in
    FROM {LEASE_TABLE} WHERE sweep = :sweep FOR UPDATE
    """
)
_WRITE = text(
    f"""
    INSERT INTO {LEASE_TABLE} (sweep, owner, host, pid, server_started_at, heartbeat_at, expires_at)
    VALUES (:sweep, :owner, :host, :pid, pg_postmaster_start_time(), now(), now() + make_interval(secs => :expiry))
    ON CONFLICT (sweep) DO UPDATE SET owner = excluded.owner, host = excluded.host, pid = excluded.pid,
        server_started_at = excluded.server_started_at, heartbeat_at = excluded.heartbeat_at,
        expires_at = excluded.expires_at
    """
)
_REFRESH = text(
    f"""
    UPDATE {LEASE_TABLE} SET heartbeat_at = now(), expires_at = now() + make_interval(secs => :expiry)
    WHERE sweep = :sweep AND owner = :owner
    """
)


class LeaseLost(Exception):
    """This driver's lease is no longer its own; the message says what happened to it."""


class PostgresLease:
    """The lease on one sweep, held from `acquire()` to `release()`."""

    def __init__(self, engine: Engine, sweep: str, retry_seconds: float) -> None:
        self.engine, self.sweep = engine, sweep
        self.owner = secrets.token_hex(16)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.expiry_s = retry_seconds + EXPIRY_MARGIN_S
        self.lost_to: str | None = None  # what became of the lease, once lost
        self._connection: Connection | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> None:
        """Claim the lease (raises Taken saying who holds it), then keep it with a heartbeat."""
        _ensure_table(self.engine)
        with self._guard:
            self._claim()
        self._heartbeat = threading.Thread(target=self._beat, name=f"telescope-lease-{self.sweep}", daemon=True)
        self._heartbeat.start()

    def _claim(self) -> None:
        if self._connection is None:
            self._connection = self.engine.connect()
        conn = self._connection
        key = {"key": lease_key(self.sweep)}
        try:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
                raise Taken("is being run by another telescope process")
            row = conn.execute(_READ, {"sweep": self.sweep}).first()
            if row is not None and row.owner != self.owner and not row.same_server and row.expires_in > 0:
                if not _ended_here(row.host, row.pid):
                    raise Taken(
                        f"was being run by {_holder(row)} when the database restarted, and that driver may still "
                        f"be reconnecting (its lease expires in {row.expires_in:.0f} s)"
                    )
            conn.execute(
                _WRITE,
                {"sweep": self.sweep, "owner": self.owner, "host": self.host, "pid": self.pid, "expiry": self.expiry_s},
            )
            conn.commit()
        except BaseException:
            self._drop_connection()  # ends the session, and its advisory lock with it
            raise

    def _refresh(self) -> None:
        assert self._connection is not None
        changed = self._connection.execute(
            _REFRESH, {"sweep": self.sweep, "owner": self.owner, "expiry": self.expiry_s}
        ).rowcount
        self._connection.commit()
        if changed == 0:
            raise Taken("was taken over by another driver")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._guard:
                if self._stop.is_set() or self.lost_to is not None:
                    return
                try:
                    if self._connection is not None:
                        try:
                            self._refresh()
                            continue
                        except DBAPIError:  # the session is gone (a restart): claim again
                            self._drop_connection()
                    self._claim()
                except Taken as taken:
                    self.lost_to = str(taken)
                    return
                except DBAPIError:
                    pass  # the database is away: try again at the next beat

    def check(self, conn: Connection) -> None:
        """Within a write's transaction: raise LeaseLost unless the lease is still this
        driver's (the row is locked against a takeover until the write commits)."""
        if self.lost_to is not None:
            raise LeaseLost(self.lost_to)
        row = conn.execute(
            text(f"SELECT owner, host, pid FROM {LEASE_TABLE} WHERE sweep = :sweep FOR SHARE"), {"sweep": self.sweep}
        ).first()
        if row is None or row.owner != self.owner:
            self.lost_to = f"was taken over by {_holder(row)}" if row is not None else "was released by someone else"
            raise LeaseLost(self.lost_to)

    def release(self) -> None:
        """Stop the heartbeat and give the lease up; when the database is away the row
        stays, and expires."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._guard:
            try:
                if self._connection is not None and self.lost_to is None:
                    self._connection.execute(
                        text(f"DELETE FROM {LEASE_TABLE} WHERE sweep = :sweep AND owner = :owner"),
                        {"sweep": self.sweep, "owner": self.owner},
                    )
                    self._connection.commit()
            except DBAPIError:
                pass
            finally:
                self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()  # really closed, not pooled: its advisory lock goes
                self._connection.close()
            except DBAPIError:
                pass
            self._connection = None


def _holder(row: Any) -> str:
    return f"{row.host} pid {row.pid}"


def _ended_here(host: str, pid: int) -> bool:
    """Whether the holder ran on this machine and its process has ended (it cannot be
    reconnecting, so its lease need not expire first)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def _ensure_table(engine: Engine) -> None:
    """Create the lease table of a database made before it existed (drivers take turns)."""
    with engine.connect() as conn:
        if conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": LEASE_TABLE}):
            return
        conn.scalar(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
        LeaseModel.__table__.create(conn, checkfirst=True)
        conn.commit()
