"""The Ray Tune executor: one `Tuner` per level, trials on the local machine or a cluster.

Each Tune trial is a pack of trials (telescope.trials.packs; one trial when packing is
off), a function trainable that wraps the pack function in the shared retry policy. Actors are reused between trials, so a worker process imports
torch and loads the corpus once (the data loader is cached per process) rather
than once per trial. Step metrics go back to the driver in batches through
`tune.report`, keyed by trial; the last report carries the `TrialResult`s. A Tune callback turns
the reports into `TrialEvents` calls in the driver's process, so the driver
stays the only writer of the database. Ray-level failures (a worker process
that dies) are retried by Tune's `FailureConfig`; a trial still failing after
that is `failed` with Ray's error, and the level goes on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import socket
import tempfile
import time
from typing import Any, Iterator, Sequence

import ray
from ray import tune

from telescope.errors import TelescopeError
from telescope.spec import StepMetrics, Status, TrialResult, TrialSpec
from telescope.trials.attempts import run_pack_with_retries
from telescope.trials.base import ExecutorSettings, PackFn, TrialEvents, TrialFn
from telescope.trials.packs import pack_key, plan_packs
from telescope.trials.threads import limit_threads, threads_for

REPORT_INTERVAL_S = 0.5  # how often a running trial sends its new step rows to the driver
CONNECT_TIMEOUT_S = 5.0

# Keys of the dicts a trial sends with `tune.report`.
_ROWS = "telescope_rows"
_ATTEMPT = "telescope_attempt"
_RESULT = "telescope_result"

# Read by Tune when `fit` starts: no CSV/JSON/TensorBoard files, Ctrl-C raises
# KeyboardInterrupt instead of ending the level quietly with trials unfinished.
_QUIET_TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # the new console output prints a config table even at verbose=0
}
_ANALYSIS_LOGGER = logging.getLogger("ray.tune.analysis.experiment_analysis")
_AUTH_MODULE = "ray._private.authentication.authentication_token_setup"


class RayExecutor:
    def __init__(
        self,
        settings: ExecutorSettings,
        trial_fn: TrialFn,
        pack_fn: PackFn | None = None,
        report_interval_s: float = REPORT_INTERVAL_S,
    ):
        self.settings = settings
        self._trial_fn = trial_fn
        self._pack_fn = pack_fn
        self._report_interval_s = report_interval_s
        self._owns_connection = _connect(settings.ray_address)
        try:
            self._slots = _check_resources(settings)
        except TelescopeError:
            self.close()
            raise

    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        if not trials:
            return
        keys = [key for key, _ in trials]
        if len(set(keys)) != len(keys):
            raise ValueError("trial keys must be unique within one run")
        settings = self.settings
        pack_size = settings.pack_size if self._pack_fn is not None else 1
        packs = plan_packs([pack_key(spec) for _, spec in trials], pack_size, self._slots)
        members = {f"pack-{n}": [trials[i] for i in pack] for n, pack in enumerate(packs)}
        trainable = _make_trainable(
            self._trial_fn,
            self._pack_fn,
            members,
            max_retries=settings.max_retries,
            threads=threads_for(settings.cpus_per_trial),
            report_interval_s=self._report_interval_s,
        )
        resources = {"cpu": settings.cpus_per_trial}
        if settings.gpus_per_trial:
            resources["gpu"] = settings.gpus_per_trial
        relay = _EventRelay(events, {pack: [key for key, _ in pack_trials] for pack, pack_trials in members.items()})
        with tempfile.TemporaryDirectory(prefix="telescope-tune-", ignore_cleanup_errors=True) as storage:
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources),
                param_space={"pack": tune.grid_search(list(members))},
                tune_config=tune.TuneConfig(
                    reuse_actors=True,
                    max_concurrent_trials=settings.max_concurrent,
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name="level",
                    storage_path=storage,
                    verbose=0,
                    callbacks=[relay],
                    failure_config=tune.FailureConfig(max_failures=settings.max_retries),
                    checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0),
                ),
            )
            # Without result files Tune's end-of-run analysis warns about every trial.
            with _environment(_QUIET_TUNE_ENV), _logger_level(_ANALYSIS_LOGGER, logging.ERROR):
                try:
                    tuner.fit()
                except Exception:
                    if relay.driver_error is not None:
                        raise relay.driver_error from None
                    raise
        if relay.driver_error is not None:
            raise relay.driver_error
        unfinished = [key for key in keys if key not in relay.finished]
        if unfinished:
            raise RuntimeError(f"Ray Tune stopped before these trials finished: {', '.join(unfinished)}")

    def close(self) -> None:
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()
        self._owns_connection = False


# --- connecting ---------------------------------------------------------------


def _connect(address: str | None) -> bool:
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
        with _logger_level(logging.getLogger(_AUTH_MODULE), logging.ERROR):
            ray.init(address="local", num_cpus=_machine_cpus(), include_dashboard=False, **quiet)
        return True
    _use_token_auth_if_available()
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TelescopeError(
            f"cannot connect to the Ray cluster at {address}: {_first_line(exc)} "
            "(a cluster with token authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        ) from None
    return True


def _use_token_auth_if_available() -> None:
    """Send the auth token when one is available, as `ray.init()` does for a
    cluster it finds itself but not for an explicit address (Ray >= 2.52)."""
    try:
        auth = importlib.import_module(_AUTH_MODULE)
    except ImportError:  # a Ray without token authentication
        return
    with _logger_level(auth.logger, logging.ERROR):
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


def _check_resources(settings: ExecutorSettings) -> int:
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


# --- the worker side ----------------------------------------------------------

def _make_trainable(
    trial_fn: TrialFn,
    pack_fn: PackFn | None,
    members: dict[str, list[tuple[str, TrialSpec]]],
    max_retries: int,
    threads: int,
    report_interval_s: float,
):
    def telescope_trial(config: dict[str, Any]) -> None:
        limit_threads(threads)
        trials = members[config["pack"]]
        stream = _ReportStream(report_interval_s)
        results = run_pack_with_retries(
            trial_fn,
            pack_fn,
            [spec for _, spec in trials],
            [functools.partial(stream.add, key) for key, _ in trials],
            max_retries,
            lambda index, attempt: stream.restart(trials[index][0], attempt),
        )
        stream.close({key: result for (key, _), result in zip(trials, results)})

    return telescope_trial


class _ReportStream:
    """Batches the step rows of a pack's trials into `tune.report` calls (each one is a
    round trip to the driver that pauses the training thread)."""

    def __init__(self, interval_s: float):
        self._interval_s = interval_s
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._attempts: dict[str, int] = {}
        self._last = time.monotonic()

    def add(self, key: str, row: StepMetrics) -> None:
        self._rows.setdefault(key, []).append(dict(vars(row)))
        if time.monotonic() - self._last >= self._interval_s:
            self._send({})

    def restart(self, key: str, attempt: int) -> None:
        self._rows.pop(key, None)  # what the failed attempt had not yet sent is dropped
        self._attempts[key] = attempt

    def close(self, results: dict[str, TrialResult]) -> None:
        self._send({_RESULT: {key: result.to_dict() for key, result in results.items()}})

    def _send(self, extra: dict[str, Any]) -> None:
        tune.report({_ROWS: self._rows, _ATTEMPT: dict(self._attempts), **extra})
        self._rows = {}
        self._last = time.monotonic()


# --- the driver side ----------------------------------------------------------


class _EventRelay(tune.Callback):
    """Turns Tune's trial callbacks (run in the driver's process) into TrialEvents, one
    per trial of each pack."""

    def __init__(self, events: TrialEvents, members: dict[str, list[str]]):
        self._events = events
        self._members = members
        self._attempt: dict[str, int] = {}
        self.finished: set[str] = set()
        self.driver_error: BaseException | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config, callbacks included, into its experiment
        # folder; the events (a database session...) only live in the driver.
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key in self._members[trial.config["pack"]]:
            self._attempt[key] = 0
            self._deliver(self._events.started, key)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if _ATTEMPT not in result:
            return
        for key in self._members[trial.config["pack"]]:
            if key in self.finished:
                continue
            attempt = result[_ATTEMPT].get(key, 0)
            if attempt != self._attempt.get(key):
                self._attempt[key] = attempt
                self._deliver(self._events.started, key)
            rows = result[_ROWS].get(key)
            if rows:
                self._deliver(self._events.metrics, key, [StepMetrics(**row) for row in rows])
            if key in result.get(_RESULT, {}):
                self.finished.add(key)
                self._deliver(self._events.finished, key, TrialResult.from_dict(result[_RESULT][key]))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        attempts = trial.num_failures
        error = f"failed after {attempts} attempt{'s' if attempts > 1 else ''}: {_ray_error_line(trial)}"
        for key in self._members[trial.config["pack"]]:
            if key not in self.finished:
                self.finished.add(key)
                self._deliver(self._events.finished, key, TrialResult(status=Status.FAILED, error=error))

    def _deliver(self, method: Any, *args: Any) -> None:
        if self.driver_error is not None:
            return
        try:
            method(*args)
        except Exception as exc:
            # Kept and raised from `run` once Tune has stopped: a failing driver is not a failing trial.
            self.driver_error = exc
            raise


def _ray_error_line(trial: Any) -> str:
    """One line for the error Tune recorded for a trial (a dead worker, say).

    Tune writes it to the trial's folder on the driver before calling back;
    `trial.get_error()` would read the synced copy, which is not there yet.
    """
    exc = None
    if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
        with contextlib.suppress(Exception), open(trial.pickled_error_file, "rb") as f:
            exc = ray.cloudpickle.load(f)
    if exc is None:
        return "Ray reported an error without details"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    if named:  # a traceback: its last line names the error
        return named[-1][:500]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    exit_type = re.search(r"Worker exit type: (\w+)", str(exc))
    if exit_type:
        text += f" (worker exit: {exit_type.group(1)})"
    return text[:500]


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _logger_level(logger: logging.Logger, level: int) -> Iterator[None]:
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
