"""`telescope dashboard [SWEEP ...]`: browse the stored runs in optuna-dashboard, live."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Iterator

import typer

from telescope.cli.common import DbOption, StoreOption, err_console, styled
from telescope.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, REFRESH_S

if TYPE_CHECKING:
    from telescope.dashboard.server import DashboardServer
    from telescope.storage.database import Database
    from telescope.storage.metrics import MetricsStore

PortOption = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port of the dashboard (0: any free one).")]


def dashboard(
    sweeps: Annotated[
        list[str] | None, typer.Argument(help="Runs to show (sweeps, transfer checks, batch studies). Default: all.")
    ] = None,
    db: DbOption = None,
    store: StoreOption = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Where the Optuna mirror lives: a SQLite file or postgresql://...?options=-csearch_path=SCHEMA. "
            "Default: DB.optuna.db beside a SQLite database, schema telescope_optuna in PostgreSQL.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on; reach a remote machine with `ssh -L PORT:127.0.0.1:PORT`."),
    ] = DEFAULT_HOST,
    port: PortOption = DEFAULT_PORT,
    refresh: Annotated[
        float, typer.Option("--refresh", min=0.1, help="Seconds between two mirrors of the database.")
    ] = REFRESH_S,
) -> None:
    """Mirror the runs into an Optuna storage and serve optuna-dashboard on it until Ctrl+C."""
    from telescope.dashboard.server import bind
    from telescope.storage.database import Database
    from telescope.storage.metrics import MetricsStore

    server = bind(host, port)
    try:
        with Database(db, create=False) as database:
            for name in sweeps or []:
                database.require_sweep(name)
            with serve_mirror(server, database, MetricsStore(store), storage, sweeps, refresh):
                err_console.print("Ctrl+C stops it; the mirror stays for next time.", highlight=False)
                try:
                    threading.Event().wait()
                except KeyboardInterrupt:
                    pass
    finally:
        server.server_close()


@contextmanager
def serve_mirror(
    server: "DashboardServer",
    database: "Database",
    store: "MetricsStore",
    storage: str | None = None,
    sweeps: list[str] | None = None,
    refresh: float = REFRESH_S,
) -> Iterator[str]:
    """Mirror `sweeps` (default: every run) now, then serve the dashboard and mirror again
    every `refresh` seconds until the block ends; prints and yields the dashboard's URL."""
    import optuna

    from telescope.dashboard.location import mirror_url, open_mirror
    from telescope.dashboard.mirror import Mirror
    from telescope.dashboard.server import serving
    from telescope.storage.urls import safe_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created
    target = mirror_url(database.url, storage)
    optuna_storage = open_mirror(target)
    try:
        mirror = Mirror(database, store, optuna_storage, sweeps)
        counts = mirror.run()
        total = len(optuna_storage.get_all_studies())
        err_console.print(
            f"mirror: {safe_url(target)} ({total} studies; {counts.studies} new, {counts.trials} new trials)",
            highlight=False,
        )

        def warn(line: str) -> None:
            err_console.print(styled("warning:", "yellow", f" {line}"), highlight=False)

        with serving(server, optuna_storage, mirror.run, refresh, warn) as url:
            err_console.print(f"dashboard: {url}", highlight=False)
            yield url
        mirror.run()  # the final state, for whoever opens the mirror later
    finally:
        optuna_storage.engine.dispose()


def bind_for_sweep(port: int) -> "DashboardServer":
    """The socket of `telescope sweep --dashboard`, bound before the sweep writes anything."""
    from telescope.dashboard.server import bind

    return bind(DEFAULT_HOST, port)


@contextmanager
def sweep_dashboard(server: "DashboardServer | None", database: "Database", store: "MetricsStore") -> Iterator[None]:
    """Serve the dashboard on every run of `database` while the block runs (a sweep), and
    show its address in the sweep's live view; nothing without a server."""
    if server is None:
        yield
        return
    from telescope.progress import SweepProgress

    try:
        with serve_mirror(server, database, store) as url:
            SweepProgress.dashboard = url
            try:
                yield
            finally:
                SweepProgress.dashboard = None
    finally:
        server.server_close()
