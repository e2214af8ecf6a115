"""Executor conformance: the local and Ray executors keep the same contract.

One scripted level runs once per executor (module-scoped) and several tests read
its events; Ray starts once for the whole file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import fake_trials
import pytest
from fake_trials import FakePack, FakeTrial, expected_val_loss

from telescope.errors import TelescopeError
from telescope.runs.executor import make_executor
from telescope.spec import Status, StepMetrics, TrainSettings, TrialResult, TrialSpec
from telescope.trials import ExecutorSettings, Packing

STEPS = 20
PLAIN, FLAKY, BROKEN, DIVERGING = (0, 1, 2, 3), 4, 5, 6
MAX_RETRIES = 2


def spec(seed: int, lr: float = 0.01, steps: int = STEPS) -> TrialSpec:
    return TrialSpec(width=64, base_width=64, lr=lr, weight_decay=0.1, seed=seed, train=TrainSettings(steps=steps))


@dataclass
class Recorder:
    """TrialEvents that remember every call, with the thread it came from."""

    calls: list[tuple[str, str, object]] = field(default_factory=list)
    threads: set[tuple[int, int]] = field(default_factory=set)

    def _note(self, kind: str, key: str, payload: object) -> None:
        self.threads.add((os.getpid(), threading.get_ident()))
        self.calls.append((kind, key, payload))

    def started(self, key: str) -> None:
        self._note("started", key, None)

    def metrics(self, key: str, rows: list[StepMetrics]) -> None:
        self._note("metrics", key, list(rows))

    def finished(self, key: str, result: TrialResult) -> None:
        self._note("finished", key, result)

    def of(self, key: str) -> list[tuple[str, object]]:
        return [(kind, payload) for kind, k, payload in self.calls if k == key]

    def results(self) -> dict[str, TrialResult]:
        return {key: payload for kind, key, payload in self.calls if kind == "finished"}

    def steps_of_last_attempt(self, key: str) -> list[int]:
        events = self.of(key)
        last_start = max(i for i, (kind, _) in enumerate(events) if kind == "started")
        return [row.step for kind, rows in events[last_start:] if kind == "metrics" for row in rows]


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process_ray():
    """One Ray for the file, started the way `telescope sweep` starts it."""
    pytest.importorskip("ray")
    import ray.cloudpickle

    from telescope.trials.ray_cluster import connect as _connect

    ray.cloudpickle.register_pickle_by_value(fake_trials)  # workers cannot import tests/
    _connect(None)  # no executor of its own: its idle workers would hold the CPUs the tests need
    yield
    ray.shutdown()


def build(kind: str, request: pytest.FixtureRequest, trial_fn, **settings):
    if kind == "local":
        return make_executor(ExecutorSettings(kind="local", **settings), trial_fn)
    request.getfixturevalue("in_process_ray")
    from telescope.trials.ray import RayExecutor

    # Short report interval so that even these brief trials stream several batches.
    return RayExecutor(ExecutorSettings(kind="ray", **settings), trial_fn, report_interval_s=0.05)


@dataclass
class Level:
    kind: str
    trial: FakeTrial
    events: Recorder
    keys: dict[int, str]


@pytest.fixture(scope="module", params=["local", "ray"])
def level(request, tmp_path_factory) -> Level:
    """A level with plain, flaky (raises once), broken (always raises) and diverging trials."""
    trial = FakeTrial(
        str(tmp_path_factory.mktemp("attempts")),
        fail_times={FLAKY: 1, BROKEN: 1000},
        diverge=frozenset({DIVERGING}),
        step_sleep_s=0.01,
    )
    seeds = [*PLAIN, FLAKY, BROKEN, DIVERGING]
    keys = {seed: f"trial-{seed}" for seed in seeds}
    trials = [(keys[seed], spec(seed, lr=0.01 * (seed + 1))) for seed in seeds]
    executor = build(request.param, request, trial, max_retries=MAX_RETRIES)
    events = Recorder()
    try:
        executor.run(trials, events)
    finally:
        executor.close()
    return Level(request.param, trial, events, keys)


# --- the conformance suite ------------------------------------------------------------


def test_every_trial_finishes_exactly_once_with_its_own_result(level: Level):
    finished = [key for kind, key, _ in level.events.calls if kind == "finished"]
    assert sorted(finished) == sorted(level.keys.values())
    results = level.events.results()
    for seed in (*PLAIN, FLAKY):
        result = results[level.keys[seed]]
        assert result.status is Status.COMPLETED
        assert result.val_loss == pytest.approx(expected_val_loss(0.01 * (seed + 1)))
        assert result.steps == STEPS


def test_events_arrive_in_the_callers_main_thread(level: Level):
    assert level.events.threads == {(os.getpid(), threading.main_thread().ident)}


def test_metrics_arrive_in_step_order_between_started_and_finished(level: Level):
    for seed in (*PLAIN, FLAKY):
        key = level.keys[seed]
        kinds = [kind for kind, _ in level.events.of(key)]
        assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("finished") == 1
        assert level.events.steps_of_last_attempt(key) == list(range(1, STEPS + 1))


def test_a_trial_that_keeps_raising_is_retried_then_failed_with_its_error(level: Level):
    result = level.events.results()[level.keys[BROKEN]]
    assert level.trial.attempts(BROKEN) == MAX_RETRIES + 1
    assert result.status is Status.FAILED
    assert result.error.startswith(f"failed after {MAX_RETRIES + 1} attempts: RuntimeError: injected failure")
    assert "fake_trials.py" in result.error  # where it was raised


def test_a_trial_that_raises_once_then_succeeds_completes(level: Level):
    key = level.keys[FLAKY]
    assert level.trial.attempts(FLAKY) == 2
    assert level.events.results()[key].status is Status.COMPLETED
    # The retry is announced, so the driver can drop the failed attempt's rows.
    assert [kind for kind, _ in level.events.of(key)].count("started") == 2


def test_a_diverged_trial_is_a_result_and_not_retried(level: Level):
    result = level.events.results()[level.keys[DIVERGING]]
    assert result.status is Status.DIVERGED
    assert level.trial.attempts(DIVERGING) == 1


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_failing_driver_stops_the_run_with_its_own_error(kind, request, tmp_path):
    class BrokenDriver(Recorder):
        def metrics(self, key: str, rows: list[StepMetrics]) -> None:
            raise OSError("disk full")

    trial = FakeTrial(str(tmp_path))
    executor = build(kind, request, trial, max_retries=2)
    try:
        with pytest.raises(OSError, match="disk full"):
            executor.run([("a", spec(0)), ("b", spec(1))], BrokenDriver())
    finally:
        executor.close()
    assert trial.attempts(0) + trial.attempts(1) >= 1
    assert max(trial.attempts(0), trial.attempts(1)) == 1  # a driver error is not a trial error


# --- Ray only ----------------------------------------------------------------------


def test_ray_reuses_worker_processes_across_trials(level: Level):
    if level.kind != "ray":
        pytest.skip("Ray only")
    pids = {level.events.results()[level.keys[seed]].fingerprint["pid"] for seed in (*PLAIN, FLAKY)}
    # Five completed trials on a 2-CPU budget: a fresh worker per trial would give five pids.
    assert len(pids) <= os.cpu_count()
    assert os.getpid() not in pids


def test_ray_worker_that_dies_is_retried_then_failed_and_the_level_goes_on(request, tmp_path):
    trial = FakeTrial(str(tmp_path), crash=frozenset({1}))
    executor = build("ray", request, trial, max_retries=1)
    events = Recorder()
    try:
        executor.run([("fine", spec(0)), ("dies", spec(1))], events)
    finally:
        executor.close()
    results = events.results()
    assert results["fine"].status is Status.COMPLETED
    assert results["dies"].status is Status.FAILED
    assert results["dies"].error.startswith("failed after 2 attempts:")
    assert "died" in results["dies"].error  # what Ray said happened to the worker
    assert trial.attempts(1) == 2


def test_ray_pack_whose_worker_dies_is_split_so_only_the_trial_that_kills_it_fails(request, tmp_path):
    request.getfixturevalue("in_process_ray")
    from telescope.trials.ray import RayExecutor

    trial = FakeTrial(str(tmp_path), crash=frozenset({1}))
    settings = ExecutorSettings(kind="ray", max_concurrent=1, pack=2, max_retries=1)  # one pack of both
    executor = RayExecutor(settings, trial, Packing(lambda spec: 0, FakePack(trial)), report_interval_s=0.05)
    events = Recorder()
    try:
        executor.run([("fine", spec(0)), ("dies", spec(1))], events)
    finally:
        executor.close()
    results = events.results()
    assert results["fine"].status is Status.COMPLETED  # alone on its retry
    assert results["dies"].status is Status.FAILED
    assert results["dies"].error.startswith("failed after 2 attempts:")
    assert (trial.attempts(0), trial.attempts(1)) == (2, 2)
    assert events.steps_of_last_attempt("fine") == list(range(1, spec(0).train.steps + 1))


def test_ray_refuses_resources_the_cluster_does_not_have(request):
    request.getfixturevalue("in_process_ray")
    from telescope.trials.ray import RayExecutor

    with pytest.raises(TelescopeError, match="cpus_per_trial=64"):
        RayExecutor(ExecutorSettings(cpus_per_trial=64), FakeTrial("/nonexistent"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_is_a_clear_error_within_seconds():
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(TelescopeError, match=f"cannot reach the Ray cluster at {address}"):
        make_executor(ExecutorSettings(ray_address=address), FakeTrial("/nonexistent"))
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("reply", [b"", b"220 mail.example ESMTP\r\n", b"-ERR unknown command\r\n"])
def test_an_open_port_that_is_not_ray_is_refused_within_seconds(reply):
    pytest.importorskip("ray")
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def answer() -> None:  # a server that speaks some other protocol, or stays silent
        conn, _ = server.accept()
        with conn:
            conn.sendall(reply)
            conn.recv(1024)
            time.sleep(0.5 if reply else 8)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    start = time.monotonic()
    with pytest.raises(TelescopeError, match=f"{address} answers, but not as a Ray cluster"):
        make_executor(ExecutorSettings(ray_address=address), FakeTrial("/nonexistent"))
    assert time.monotonic() - start < 10
    server.close()


@pytest.mark.parametrize("address", ["nonsense", "ray://127.0.0.1:10001"])
def test_malformed_or_client_ray_addresses_are_refused(address):
    pytest.importorskip("ray")
    with pytest.raises(TelescopeError, match="not host:port|Ray Client"):
        make_executor(ExecutorSettings(ray_address=address), FakeTrial("/nonexistent"))


# --- a cluster started separately ------------------------------------------------------

DRIVER = """
import json, sys
sys.path.insert(0, {tests!r})
import ray.cloudpickle, fake_trials
ray.cloudpickle.register_pickle_by_value(fake_trials)
from telescope.spec import TrainSettings, TrialSpec
from telescope.runs.executor import make_executor
from telescope.trials import ExecutorSettings

class Events:
    def __init__(self): self.results = {{}}
    def started(self, key): pass
    def metrics(self, key, rows): pass
    def finished(self, key, result): self.results[key] = result.to_dict()

executor = make_executor(ExecutorSettings(ray_address={address!r}), fake_trials.FakeTrial({counters!r}))
events = Events()
trials = [(f"t{{i}}", TrialSpec(width=64, base_width=64, lr=0.01, weight_decay=0.1, seed=i,
                                train=TrainSettings(steps=10))) for i in range(3)]
executor.run(trials, events)
executor.close()
print(json.dumps(events.results))
"""


def test_trials_run_on_a_ray_cluster_started_separately(ray_cluster, tmp_path):
    head, address = ray_cluster
    script = DRIVER.format(tests=str(Path(__file__).parent), address=address, counters=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    finished = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(finished) == ["t0", "t1", "t2"]
    port = address.rsplit(":", 1)[1]
    for result in finished.values():
        assert result["status"] == "completed"
        assert result["fingerprint"]["ray_gcs"].endswith(f":{port}")  # ran on that cluster
    assert head.poll() is None  # closing the executor disconnects, it does not stop the cluster


def test_local_trials_get_cpus_per_trial_torch_threads_and_the_caller_keeps_its_own():
    torch = pytest.importorskip("torch")
    seen = []

    def trial(spec: TrialSpec, on_metrics) -> TrialResult:
        seen.append(torch.get_num_threads())
        return TrialResult(status=Status.COMPLETED)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        make_executor(ExecutorSettings(kind="local", cpus_per_trial=1), trial).run([("a", spec(0))], Recorder())
        assert seen == [1]  # contended intra-op threads make tiny proxies several times slower
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
