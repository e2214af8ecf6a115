"""The lease of a sweep on PostgreSQL: a row that survives server restarts.

A session advisory lock vanishes when the server restarts, while the driver that held it
lives on and reconnects: a second driver could then run the same sweep. So the lease is a
row in `telescope_leases`, written by the holder's own session (kept open while it holds
the lease) and refreshed by a heartbeat. Another driver takes a lease over only when
- its holder's session has ended while the server kept running (the holder died), or
- the server restarted since the holder's last heartbeat and the lease has expired:
  `expires_at` is the last heartbeat plus the holder's own --db-retry-seconds and a
  margin, so a holder still waiting for the database is never overtaken.
The holder's session also holds an advisory lock on the sweep, so that a live holder is
seen by every user (pg_stat_activity hides other users' sessions); the row tells a holder
that died from one cut off by a restart. The holder re-claims its row after a restart. Before each write the database checks, in
the write's own transaction, that the row is still its own; a driver that lost it stops.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from telescope.storage.locks import CREATE_LOCK_KEY, Taken, lease_key
from telescope.storage.schema import LEASE_TABLE, LeaseModel

HEARTBEAT_S = 2.0
EXPIRY_MARGIN_S = 30.0

_READ = text(
    f"""
    SELECT owner, holder, server_started_at = pg_postmaster_start_time() AS same_server,
           ceil(extract(epoch FROM expires_at - now())) AS expires_in
    FROM {LEASE_TABLE} WHERE sweep = :sweep FOR UPDATE
    """
)
_WRITE = text(
    f"""
    INSERT INTO {LEASE_TABLE} (sweep, owner, holder, backend_pid, backend_start, server_started_at,
                               heartbeat_at, expires_at)
    SELECT :sweep, :owner, :holder, pg_backend_pid(), a.backend_start, pg_postmaster_start_time(),
           now(), now() + make_interval(secs => :expiry)
    FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
    ON CONFLICT (sweep) DO UPDATE SET owner = excluded.owner, holder = excluded.holder,
        backend_pid = excluded.backend_pid, backend_start = excluded.backend_start,
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
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
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
                row = conn.execute(_READ, {"sweep": self.sweep}).first()
                holder = f" ({row.holder})" if row is not None else ""
                raise Taken(f"is being run by another telescope process{holder}")
            row = conn.execute(_READ, {"sweep": self.sweep}).first()
            if row is not None and row.owner != self.owner and not row.same_server and row.expires_in > 0:
                raise Taken(
                    f"was being run by {row.holder} when the database restarted, and that driver may still be "
                    f"reconnecting (its lease expires in {row.expires_in:.0f} s)"
                )
            conn.execute(
                _WRITE, {"sweep": self.sweep, "owner": self.owner, "holder": self.holder, "expiry": self.expiry_s}
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
            text(f"SELECT owner, holder FROM {LEASE_TABLE} WHERE sweep = :sweep FOR SHARE"), {"sweep": self.sweep}
        ).first()
        if row is None or row.owner != self.owner:
            self.lost_to = f"was taken over by {row.holder}" if row is not None else "was released by someone else"
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


def _ensure_table(engine: Engine) -> None:
    """Create the lease table of a database made before it existed (drivers take turns)."""
    with engine.connect() as conn:
        if conn.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": LEASE_TABLE}):
            return
        conn.scalar(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
        LeaseModel.__table__.create(conn, checkfirst=True)
        conn.commit()
