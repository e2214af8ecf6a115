"""Connecting to Ray (a fresh local instance, or a cluster's head checked first so a wrong
address fails in seconds) and the resources a cluster has for telescope's trials."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
from typing import Iterator

import ray

from telescope.errors import TelescopeError
from telescope.trials.base import ExecutorSettings

CONNECT_TIMEOUT_S = 5.0
AUTH_MODULE = "ray._private.authentication.authentication_token_setup"


def connect(address: str | None) -> bool:
    """Start or join Ray; return whether `close` should shut it down (False when
    this process was already connected before us)."""
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto") and not _same_address(address, current):
            raise TelescopeError(f"this process is already connected to Ray at {current}, not {address}")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address is None:
        # "local" always starts a fresh instance, never joins a `ray start` cluster by accident.
        # Ray enables token authentication for it and says so: not worth a warning.
        with logger_level(logging.getLogger(AUTH_MODULE), logging.ERROR):
            ray.init(address="local", num_cpus=_machine_cpus(), include_dashboard=False, **quiet)
        return True
    _use_token_auth_if_available()
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TelescopeError(
            f"cannot connect to the Ray cluster at {address}: {first_line(exc)} "
            "(a cluster with token authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        ) from None
    return True


def _use_token_auth_if_available() -> None:
    """Send the auth token when one is available, as `ray.init()` does for a
    cluster it finds itself but not for an explicit address (Ray >= 2.52)."""
    try:
        auth = importlib.import_module(AUTH_MODULE)
    except ImportError:  # a Ray without token authentication
        return
    with logger_level(auth.logger, logging.ERROR):
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address nobody listens on; `ray.init` alone retries for about a minute."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise TelescopeError(
            f"Ray Client addresses are not supported ({address}): run telescope on a node of the "
            "cluster and give the head's GCS address, host:port"
        )
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise TelescopeError(f"Ray address {address!r} is not host:port (or 'auto')")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as conn:
            speaks_grpc = os.environ.get("RAY_USE_TLS", "0") not in ("0", "") or _answers_http2(conn)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TelescopeError(f"cannot reach the Ray cluster at {address}: {reason}") from None
    if not speaks_grpc:  # ray.init would wait for minutes on, say, a database's port
        raise TelescopeError(
            f"{address} answers, but not as a Ray cluster (no gRPC there): give the head's GCS "
            "address, the --port of `ray start --head` (default 6379)"
        )


# The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 §3.4): a gRPC server, such as
# Ray's GCS, answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def _answers_http2(conn: socket.socket) -> bool:
    try:
        conn.sendall(_HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:  # silence until the timeout, or a reset
        return False
    return header[3] == _HTTP2_SETTINGS


def _same_address(a: str, b: str) -> bool:
    def resolve(address: str) -> tuple[str, str]:
        host, _, port = address.rpartition(":")
        try:
            host = socket.gethostbyname(host.strip("[]"))
        except OSError:
            pass
        return host, port

    return resolve(a) == resolve(b)


def check_resources(settings: ExecutorSettings) -> int:
    """Tune waits forever for a trial the cluster can never place: refuse it up front.
    Return how many trials the cluster runs at once (the slots packs are spread over)."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if settings.cpus_per_trial > cpus:
        raise TelescopeError(f"cpus_per_trial={settings.cpus_per_trial:g} but the Ray cluster has {cpus:g} CPUs")
    if settings.gpus_per_trial > gpus:
        if gpus == 0:
            raise TelescopeError(f"gpus_per_trial={settings.gpus_per_trial:g} but the Ray cluster has no GPU")
        raise TelescopeError(f"gpus_per_trial={settings.gpus_per_trial:g} but the Ray cluster has {gpus:g} GPUs")
    slots = int(cpus // settings.cpus_per_trial)
    if settings.gpus_per_trial:
        slots = min(slots, int(gpus // settings.gpus_per_trial))
    return max(1, min(slots, settings.max_concurrent or slots))


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def logger_level(logger: logging.Logger, level: int) -> Iterator[None]:
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
