"""optuna-dashboard over the mirror, kept fresh by a background thread.

The port is bound first (`bind`), before anything is written, so a port in use or a host
that is not this machine's is one line and nothing else. `serving` then runs the WSGI
app of optuna-dashboard on that socket in one thread and re-mirrors every few seconds in
another, for as long as the `with` block lasts.
"""

from __future__ import annotations

import errno
import socket
import threading
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from telescope.errors import TelescopeError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
REFRESH_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


class DashboardServer(ThreadingMixIn, WSGIServer):
    """A WSGI server with one thread per request (the page loads several API calls at once)."""

    daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> DashboardServer:
    """A server bound to host:port (port 0: any free one), or TelescopeError saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise TelescopeError(f"--host {host!r} is not a known address of this machine") from None
    server_class = type("DashboardServer", (DashboardServer,), {"address_family": family})
    try:
        return server_class((host, port), _QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise TelescopeError(f"port {port} on {host} is in use (another dashboard?); pass another --port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise TelescopeError(f"--host {host!r} is not an address of this machine") from None
        if e.errno == errno.EACCES:
            raise TelescopeError(f"port {port} needs privileges to bind; pass a --port above 1023") from None
        raise TelescopeError(f"cannot serve on {host}:{port}: {e.strerror}") from None


@contextmanager
def serving(
    server: DashboardServer,
    storage: "BaseStorage",
    refresh: Callable[[], object],
    every: float = REFRESH_S,
    on_error: Callable[[str], None] = lambda line: None,
) -> Iterator[str]:
    """Serve optuna-dashboard on `storage` and call `refresh` every `every` seconds (its
    errors go to `on_error`, one line each, and the next round tries again); yields the URL.
    The server closes when the block ends."""
    from optuna_dashboard import wsgi

    server.set_app(wsgi(storage))
    stop = threading.Event()

    def refresher() -> None:
        while not stop.wait(every):
            try:
                refresh()
            except Exception as e:  # a locked or briefly unreachable database: try next round
                on_error(f"dashboard refresh failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")

    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dashboard", daemon=True),
        threading.Thread(target=refresher, name="dashboard-refresh", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield server.url
    finally:
        stop.set()
        server.shutdown()
        for thread in threads:
            thread.join()
        server.server_close()
