"""Riding through a database that restarts: transient errors are retried with backoff.

A team PostgreSQL server restarts for maintenance and fails over; a sweep of many
GPU-hours should wait for it rather than stop. Connection refused or lost, a server
shutting down or starting up, and serialization failures are transient: the operation
(one transaction) runs again after 0.5, 1, 2, ... 8 s, until the database has been
unavailable for `retry_seconds`. Anything else is not retried.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

from telescope.errors import StorageError

T = TypeVar("T")

DEFAULT_RETRY_SECONDS = 120.0
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
}
# Said by libpq (no SQLSTATE) when the server is away or going away.
_TRANSIENT_TEXT = (
    "connection refused",
    "server closed the connection",
    "the database system is",  # ... shutting down, starting up, in recovery mode
    "terminating connection",
    "connection is lost",
    "connection is closed",
    "consuming input failed",
    "no connection to the server",
    "could not receive data",
    "could not send data",
    "ssl syscall error",
    "database is locked",  # SQLite: another writer held it past the busy timeout
)


def is_transient(error: BaseException) -> bool:
    """Whether a database error may pass if the same transaction is tried again later."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    if getattr(original, "sqlstate", None) in _TRANSIENT_STATES:
        return True
    state = getattr(original, "sqlstate", None) or ""
    if state.startswith("08"):  # connection_exception
        return True
    text = str(original).lower()
    return any(phrase in text for phrase in _TRANSIENT_TEXT)


class Retrier:
    """Runs database operations again while the database is unavailable.

    The time limit counts from the start of an outage, not of each operation: once the
    database has been away for `retry_seconds`, every operation fails at its first error
    (a sweep that stops then does not wait again to mark itself stopped). `on_wait` is
    called with the seconds waited so far before each new try, and with None once the
    database answers again.
    """

    def __init__(
        self,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        describe: Callable[[BaseException], str] = str,
        on_wait: Callable[[float | None], None] = lambda waited: None,
        reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.retry_seconds = retry_seconds
        self.describe = describe
        self.on_wait = on_wait
        self.reconnect = reconnect
        self._outage_started: float | None = None

    def run(self, operation: Callable[[], T]) -> T:
        delay = 0.5
        while True:
            try:
                result = operation()
            except DBAPIError as error:
                if not is_transient(error):
                    raise
                now = time.monotonic()
                if self._outage_started is None:
                    self._outage_started = now
                waited = now - self._outage_started
                if waited >= self.retry_seconds:
                    raise StorageError(
                        f"{self.describe(error)}: the database was unavailable for {waited:.0f} s, so this run "
                        "stopped; rerun the same command to resume (--db-retry-seconds waits longer)"
                    ) from None
                self.on_wait(waited)
                self.reconnect()
                time.sleep(min(delay, self.retry_seconds - waited))
                delay = min(2 * delay, 8.0)
                continue
            if self._outage_started is not None:
                self._outage_started = None
                self.on_wait(None)
            return result
