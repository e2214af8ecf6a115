"""The Ray Tune executor: a pool of Tune trials that live as long as the executor, each a
worker that takes packs of trials from a Ray queue, on the local machine or a cluster.

Tune places the workers (CPUs, whole or fractional GPUs, any node of a cluster) and
restarts one whose process dies. A worker imports torch and loads the corpus once, then
trains pack after pack (telescope.trials.packs; one trial per pack when packing is off),
level after level, so neither a new Tuner nor a new process is paid per level. A pack
runs under the shared retry policy; step metrics go back to the driver in batches
through `tune.report`, keyed by trial, and the last report carries the results. A Tune
callback forwards the reports from Tune's thread to `run`, which turns them into
`TrialEvents` calls in the caller's thread, so the driver stays the only writer of the
database. When a worker dies, the trials of the pack it held are queued again, each alone, up
to `max_retries` times each, then `failed` with Ray's error, and the level goes on.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import re
import tempfile
import threading
import time
from typing import Any, Iterator, Sequence

import ray
from ray import tune

from telescope.errors import TelescopeError
from telescope.spec import Status, StepMetrics, TrialResult, TrialSpec
from telescope.trials.attempts import run_pack_with_retries
from telescope.trials.base import ExecutorSettings, PackFn, Packing, TrialEvents, TrialFn
from telescope.trials.packs import plan_packs
from telescope.trials.ray_cluster import check_resources, connect, logger_level
from telescope.trials.threads import limit_threads, threads_for

REPORT_INTERVAL_S = 0.5  # how often a running trial sends its new step rows to the driver
_STOP_TIMEOUT_S = 30.0
_WORKER_RESTARTS = 10_000  # Tune's cap; packs lost with their worker are capped by max_retries
_IDLE_DEATHS_PER_SLOT = 3  # a worker dying before it takes a pack: a broken worker, not a trial

# Keys of the dicts a worker sends with `tune.report`.
_PACK = "telescope_pack"
_STARTED = "telescope_started"
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


class RayExecutor:
    def __init__(
        self,
        settings: ExecutorSettings,
        trial_fn: TrialFn,
        packing: Packing | None = None,
        report_interval_s: float = REPORT_INTERVAL_S,
    ):
        self.settings = settings
        self._trial_fn = trial_fn
        self._packing = packing
        self._report_interval_s = report_interval_s
        self._pool: _WorkerPool | None = None
        self._owns_connection = connect(settings.ray_address)
        try:
            self._slots = check_resources(settings)
        except TelescopeError:
            self.close()
            raise
        self._start_pool()  # the workers start up while the caller prepares the first level

    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        if not trials:
            return
        keys = [key for key, _ in trials]
        if len(set(keys)) != len(keys):
            raise ValueError("trial keys must be unique within one run")
        pack_size = self.settings.pack_size if self._packing is not None else 1
        packs = plan_packs(
            [self._packing.key(spec) if self._packing else None for _, spec in trials], pack_size, self._slots
        )
        if self._pool is None or not self._pool.alive:
            self._start_pool()
        self._pool.run([[trials[i] for i in pack] for pack in packs], events)

    def _start_pool(self) -> None:
        pack_fn = self._packing.train if self._packing else None
        self._pool = _WorkerPool(self.settings, self._trial_fn, pack_fn, self._slots, self._report_interval_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()
        self._owns_connection = False


class _WorkerPool:
    """`slots` worker trials in one Tune experiment, run by a background thread; `run`
    queues packs for them and delivers their events until every trial has finished."""

    def __init__(
        self,
        settings: ExecutorSettings,
        trial_fn: TrialFn,
        pack_fn: PackFn | None,
        slots: int,
        report_interval_s: float,
    ):
        from ray.util.queue import Queue

        self._work = Queue()
        self._events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._slots = slots
        self._max_retries = settings.max_retries
        self._pack_names = (f"pack-{n}" for n in itertools.count(1))  # unique across batches
        self._storage = tempfile.TemporaryDirectory(prefix="telescope-tune-", ignore_cleanup_errors=True)
        worker = _make_worker(
            trial_fn, pack_fn, self._work, settings.max_retries, threads_for(settings.cpus_per_trial), report_interval_s
        )
        resources = {"cpu": settings.cpus_per_trial}
        if settings.gpus_per_trial:
            resources["gpu"] = settings.gpus_per_trial
        self._tuner = tune.Tuner(
            tune.with_resources(worker, resources),
            param_space={"worker": tune.grid_search(list(range(slots)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=slots, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name="sweep",
                storage_path=self._storage.name,
                verbose=0,
                callbacks=[_EventForwarder(self._events)],
                # A worker that dies is started again; `run` queues the trials it held again.
                failure_config=tune.FailureConfig(max_failures=_WORKER_RESTARTS),
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0),
            ),
        )
        self._error: BaseException | None = None
        self._ran = self._interrupted = False
        self._thread = threading.Thread(target=self._fit, name="telescope-tune", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _fit(self) -> None:
        # Without result files Tune's end-of-run analysis warns about every trial.
        with _environment(_QUIET_TUNE_ENV), logger_level(_ANALYSIS_LOGGER, logging.ERROR):
            try:
                self._tuner.fit()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            finally:
                self._events.put(("stopped", "", None))

    def run(self, packs: Sequence[Sequence[tuple[str, TrialSpec]]], events: TrialEvents) -> None:
        batch = _Batch(events, self._pack_names, self._max_retries, self._slots)
        for pack in packs:
            self._work.put(batch.add(pack))
        self._ran = True
        self._interrupted = True  # until every trial of the batch has finished
        while batch.unfinished:
            kind, worker, payload = self._events.get()
            if kind == "stopped":
                if self._error is not None:
                    raise self._error
                raise RuntimeError(
                    f"Ray Tune stopped before these trials finished: {', '.join(sorted(batch.unfinished))}"
                )
            # A failing driver (disk full...) raises here, in its own thread.
            for job in batch.on(kind, worker, payload):
                self._work.put(job)
        self._interrupted = False

    def close(self) -> None:
        for _ in range(self._slots):
            self._work.put(None)  # a worker stops when it takes this
        # After an error or Ctrl-C, packs still running end with ray.shutdown rather than run on;
        # workers that never got a pack are not waited for either.
        finished = self._ran and not self._interrupted
        self._thread.join(timeout=_STOP_TIMEOUT_S if finished else 1.0)
        self._storage.cleanup()


# --- the worker side ----------------------------------------------------------


def _make_worker(
    trial_fn: TrialFn,
    pack_fn: PackFn | None,
    work: Any,
    max_retries: int,
    threads: int,
    report_interval_s: float,
):
    def telescope_worker(config: dict[str, Any]) -> None:
        limit_threads(threads)
        while (job := work.get()) is not None:
            pack, trials = job
            tune.report({_PACK: pack, _STARTED: True})  # the driver learns which pack this worker holds
            stream = _ReportStream(report_interval_s, pack)
            results = run_pack_with_retries(
                trial_fn,
                pack_fn,
                [spec for _, spec in trials],
                [functools.partial(stream.add, key) for key, _ in trials],
                max_retries,
                lambda index, attempt: stream.restart(trials[index][0], attempt),
            )
            stream.close({key: result for (key, _), result in zip(trials, results)})

    return telescope_worker


class _ReportStream:
    """Batches the step rows of a pack's trials into `tune.report` calls (each one is a
    round trip to the driver that pauses the training thread)."""

    def __init__(self, interval_s: float, pack: str):
        self._interval_s = interval_s
        self._pack = pack
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
        tune.report({_PACK: self._pack, _ROWS: self._rows, _ATTEMPT: dict(self._attempts), **extra})
        self._rows = {}
        self._last = time.monotonic()


# --- the driver side ----------------------------------------------------------


class _EventForwarder(tune.Callback):
    """Puts the workers' reports and failures (Tune calls back in its own thread) on a
    queue for `run`'s thread."""

    def __init__(self, events: queue.Queue):
        self._events = events

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config, callbacks included, into its experiment folder;
        # the queue only lives in the driver.
        return {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if _PACK in result:
            self._events.put(("result", trial.trial_id, result))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._events.put(("lost", trial.trial_id, _ray_error_line(trial)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._events.put(("lost", trial.trial_id, _ray_error_line(trial)))


_Job = tuple[str, list[tuple[str, TrialSpec]]]  # a pack's name and its (key, spec) trials, as queued


class _Batch:
    """The packs of one `run`: turns forwarded worker reports into TrialEvents and says
    which packs to queue again when a worker died."""

    def __init__(self, events: TrialEvents, names: Iterator[str], max_retries: int, slots: int):
        self._events = events
        self._names = names
        self._packs: dict[str, list[tuple[str, TrialSpec]]] = {}
        self._max_retries = max_retries
        self._held: dict[str, str] = {}  # worker -> the pack it runs
        self._losses: dict[str, int] = {}  # trial -> how often its worker died under it
        self._idle_deaths_left = _IDLE_DEATHS_PER_SLOT * slots
        self._attempt: dict[str, int] = {}
        self.unfinished: set[str] = set()

    def add(self, trials: Sequence[tuple[str, TrialSpec]]) -> _Job:
        """Name a pack of this batch; the job to queue for it."""
        name = next(self._names)
        self._packs[name] = list(trials)
        self.unfinished.update(key for key, _ in trials)
        return name, self._packs[name]

    def on(self, kind: str, worker: str, payload: Any) -> list[_Job]:
        """Handle one forwarded event; the jobs to queue again."""
        if kind == "lost":
            return self._lost(worker, payload)
        pack = payload[_PACK]
        if pack not in self._packs:
            return []  # a pack of an earlier batch
        keys = [key for key, _ in self._packs[pack] if key in self.unfinished]
        if _STARTED in payload:
            self._held[worker] = pack
            for key in keys:
                self._attempt[key] = 0
                self._events.started(key)
            return []
        for key in keys:
            attempt = payload[_ATTEMPT].get(key, 0)
            if attempt != self._attempt.get(key):
                self._attempt[key] = attempt
                self._events.started(key)
            rows = payload[_ROWS].get(key)
            if rows:
                self._events.metrics(key, [StepMetrics(**row) for row in rows])
            if key in payload.get(_RESULT, {}):
                self.unfinished.discard(key)
                self._events.finished(key, TrialResult.from_dict(payload[_RESULT][key]))
        if _RESULT in payload:
            self._held.pop(worker, None)
        return []

    def _lost(self, worker: str, error: str) -> list[_Job]:
        """The worker's process died: its pack's trials are queued again, each as a pack of
        its own (the one that kills its process then does so alone), until one has lost
        `max_retries` + 1 workers; then it fails with Ray's error."""
        pack = self._held.pop(worker, None)
        if pack is None or pack not in self._packs:
            self._idle_deaths_left -= 1
            if self._idle_deaths_left < 0:
                raise RuntimeError(f"Ray workers keep dying before they take a trial: {error}")
            return []
        trials = [(key, spec) for key, spec in self._packs[pack] if key in self.unfinished]
        again = []
        for key, spec in trials:
            self._losses[key] = attempts = self._losses.get(key, 0) + 1
            if attempts <= self._max_retries:
                again.append((key, spec))
                continue
            self.unfinished.discard(key)
            message = f"failed after {attempts} attempt{'s' if attempts > 1 else ''}: {error}"
            self._events.finished(key, TrialResult(status=Status.FAILED, error=message))
        return [self.add([trial]) for trial in again]


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
