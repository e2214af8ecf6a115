"""One open telescope database: where it is, its engine, the leases of the runs this
process drives, retries while the database is unavailable, and write transactions that
check the lease. The operations on sweeps, levels and trials are telescope.storage.database."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Self, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from telescope.errors import StorageError
from telescope.storage.engine import check_schema, check_sqlite_target, check_writable, make_engine
from telescope.storage.lease import LeaseLost, PostgresLease
from telescope.storage.locks import ProcessLocks, Taken, lease_key
from telescope.storage.reader import grant_reader
from telescope.storage.retry import DEFAULT_RETRY_SECONDS, Retrier
from telescope.storage.urls import error_line, resolve_url, safe_url, sqlite_path

T = TypeVar("T")


def retried(method: Callable[..., T]) -> Callable[..., T]:
    """A method of an OpenDatabase subclass run through OpenDatabase._run: retried while the
    database is unavailable, any other database error one line."""

    @functools.wraps(method)
    def run(self: "OpenDatabase", *args: Any, **kwargs: Any) -> T:
        return self._run(lambda: method(self, *args, **kwargs))

    return run


class OpenDatabase:
    """One telescope database, opened (SQLite file or PostgreSQL): its engine, the leases of
    the runs this process drives, and the retries while the database is unavailable.

    `create=True` creates the file and tables when missing and checks that the database
    can be written; `create=False` (for commands that only read) refuses a missing
    database. Either way a database of another program or another schema version is
    refused with a StorageError that names the fix, before anything is written.
    """

    def __init__(
        self, url: str | None = None, *, create: bool = True, retry_seconds: float = DEFAULT_RETRY_SECONDS
    ) -> None:
        self.url = resolve_url(url)
        self.display_url = safe_url(self.url)
        path = sqlite_path(self.url)
        if path is not None:
            check_sqlite_target(path, create)
        self.engine = make_engine(self.url)
        self._locks = ProcessLocks(self.url, self.engine)
        self._leases: dict[str, PostgresLease] = {}
        # Set `retrier.on_wait` to show that the database is away (see telescope.progress).
        self.retrier = Retrier(retry_seconds, describe=self._describe, reconnect=self.engine.dispose)
        self.notices: list[str] = []  # lines for the user: what opening the database did
        try:
            created = self._run(lambda: check_schema(self.engine, self.url, self._locks, create))
            if create:
                self._run(lambda: check_writable(self.engine, self.url))
            if created and self.url.get_backend_name() == "postgresql":
                self.notices.append(self._run(self._offer_reader))
        except BaseException:
            self.close()
            raise

    def _offer_reader(self) -> str:
        """Set up the least-privilege role of `telescope query` where this user may."""
        with self.engine.connect() as conn:
            try:
                return grant_reader(conn)
            except StorageError as e:
                return str(e)

    @contextmanager
    def lease(self, sweep: str) -> Iterator[None]:
        """Hold the right to run `sweep`: a second driver on the same sweep is refused with a
        StorageError instead of training every trial again. On SQLite the lease is a lock the
        kernel drops only when its process ends; on PostgreSQL a row that survives server
        restarts (telescope.storage.lease). Every write to the sweep checks it first."""
        try:
            if self.url.get_backend_name() != "postgresql":
                with self._locks.exclusive(lease_key(sweep), wait=False):
                    yield
                return
            lease = PostgresLease(self.engine, sweep, self.retrier.retry_seconds)
            self._run(lease.acquire)
        except Taken as taken:
            reason = str(taken) or "is being run by another telescope process"
            raise StorageError(f"sweep {sweep!r} {reason} on {self.display_url}; wait for it to end") from None
        self._leases[sweep] = lease
        try:
            yield
        finally:
            del self._leases[sweep]
            lease.release()

    @contextmanager
    def _writing(self, sweep: str) -> Iterator[Session]:
        """One write transaction on `sweep`; refused when this driver leased the sweep and
        has lost the lease since."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            lease = self._leases.get(sweep)
            if lease is not None:
                try:
                    lease.check(session.connection())
                except LeaseLost as lost:
                    raise StorageError(
                        f"sweep {sweep!r} {lost} while this driver could not reach {self.display_url}: "
                        "this driver stops here (what it finished is stored)"
                    ) from None
            yield session

    def _run(self, operation: Callable[[], T]) -> T:
        """Run one operation, again while the database is unavailable (telescope.storage.retry);
        any other database error is one line."""
        try:
            return self.retrier.run(operation)
        except DBAPIError as e:
            raise StorageError(self._describe(e)) from None

    def _describe(self, error: BaseException) -> str:
        return f"database {self.display_url}: {error_line(error, self.url)}"

    def close(self) -> None:
        """Release every connection (on SQLite this also checkpoints the WAL into the file)."""
        self.engine.dispose()
        self._locks.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r})"
