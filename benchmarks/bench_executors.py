"""Orchestration overhead of the trial executors (DESIGN.md section 5).

Runs the same level of short real proxy trials (telescope.proxy.train.run_trial)
through the local and the Ray executor, several times, and compares each level's
wall time with the reference measured in the same run: the sum of the trials'
own wall times divided by the parallelism (what a perfect scheduler would take).

    .venv/bin/python benchmarks/bench_executors.py                 # real trials
    .venv/bin/python benchmarks/bench_executors.py --fake          # CPU-burning stand-in

Overhead = wall / reference - 1. Goal: under 10% on 2 CPUs with trials of a few
seconds. Each repeat is one `run()`, i.e. one level with its own Tuner, so the
Ray figure includes starting that level's worker actors (and importing torch and
loading the corpus in them); Ray's own start-up is reported separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace

import torch  # imported up front, so no executor is charged for it inside a level

from telescope.spec import ModelShape, StepMetrics, TrainSettings, TrialResult, TrialSpec
from telescope.trials import ExecutorSettings, make_executor


@dataclass(frozen=True)
class Instrumented:
    """Wraps a trial function to record which process ran it and with how many threads."""

    fake: bool

    def __call__(self, spec: TrialSpec, on_metrics) -> TrialResult:
        if self.fake:
            result = burn_trial(spec, on_metrics)
        else:
            from telescope.proxy.train import run_trial

            result = run_trial(spec, on_metrics)
        result.fingerprint = {"pid": os.getpid(), "threads": torch.get_num_threads()}
        return result


def burn_trial(spec: TrialSpec, on_metrics) -> TrialResult:
    """Stand-in for the proxy: spec.train.steps steps of ~25 ms of pure-Python work."""
    start = time.perf_counter()
    for step in range(1, spec.train.steps + 1):
        deadline = time.perf_counter() + 0.025
        x = 0
        while time.perf_counter() < deadline:
            x += sum(range(200))
        on_metrics(StepMetrics(step, step * 1024, 1.0 / step, spec.lr, 1.0, time.perf_counter() - start))
    from telescope.spec import Status

    return TrialResult(status=Status.COMPLETED, val_loss=1.0, steps=spec.train.steps,
                       wall_time=time.perf_counter() - start)


@dataclass
class Collector:
    rows: int = 0
    results: dict[str, TrialResult] = field(default_factory=dict)
    first_start: float | None = None

    def started(self, key: str) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    def metrics(self, key: str, rows: list[StepMetrics]) -> None:
        self.rows += len(rows)

    def finished(self, key: str, result: TrialResult) -> None:
        self.results[key] = result


@dataclass
class Level:
    wall: float
    reference: float
    spin_up: float  # from run() to the first trial starting: the level's fixed cost
    pids: int
    threads: set[int]
    rows: int


def make_trials(n: int, steps: int, width: int) -> list[tuple[str, TrialSpec]]:
    model = ModelShape(depth=2, head_dim=16, seq_len=64)
    train = TrainSettings(steps=steps, batch_size=16, warmup_steps=max(1, steps // 10), device="cpu")
    base = TrialSpec(width=width, base_width=width, lr=0.03, weight_decay=0.05, model=model, train=train)
    return [(f"t{i}", replace(base, lr=0.01 * 1.5**i, seed=i)) for i in range(n)]


def run_level(executor, trials, parallelism: int) -> Level:
    events = Collector()
    start = time.perf_counter()
    executor.run(trials, events)
    wall = time.perf_counter() - start
    results = list(events.results.values())
    bad = [r for r in results if r.status.value != "completed"]
    if len(results) != len(trials) or bad:
        sys.exit(f"benchmark trials did not all complete: {[r.error or r.status for r in bad]}")
    reference = sum(r.wall_time for r in results) / parallelism
    return Level(
        wall=wall,
        reference=reference,
        spin_up=events.first_start - start,
        pids=len({r.fingerprint["pid"] for r in results}),
        threads={r.fingerprint["threads"] for r in results},
        rows=events.rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="CPU-burning stand-in instead of real trials")
    parser.add_argument("--trials", type=int, default=8, help="trials per level")
    parser.add_argument("--steps", type=int, default=100, help="training steps per trial")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="levels per executor (medians are reported)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--executors", default="local,ray")
    args = parser.parse_args()

    cpus = len(os.sched_getaffinity(0))
    trials = make_trials(args.trials, args.steps, args.width)
    trial_fn = Instrumented(args.fake)
    print(f"{args.trials} {'fake' if args.fake else 'real'} trials x {args.steps} steps "
          f"(width {args.width}), {args.repeats} levels per executor, {cpus} CPUs")

    table = []
    for kind in args.executors.split(","):
        settings = ExecutorSettings(kind=kind, cpus_per_trial=args.cpus_per_trial)
        parallelism = 1 if kind == "local" else max(1, min(args.trials, int(cpus // args.cpus_per_trial)))
        start = time.perf_counter()
        executor = make_executor(settings, trial_fn)
        startup = time.perf_counter() - start
        try:
            levels = [run_level(executor, trials, parallelism) for _ in range(args.repeats)]
        finally:
            executor.close()
        wall = statistics.median(level.wall for level in levels)
        reference = statistics.median(level.reference for level in levels)
        spin_up = statistics.median(level.spin_up for level in levels)
        per_trial_ms = 1000 * (wall - spin_up - reference) * parallelism / args.trials
        table.append((kind, parallelism, startup, spin_up, wall, reference, wall / reference, per_trial_ms,
                      max(level.pids for level in levels), sorted(set().union(*(l.threads for l in levels))),
                      levels[0].rows))
        for i, level in enumerate(levels):
            print(f"  {kind} level {i}: wall {level.wall:.2f}s, reference {level.reference:.2f}s, "
                  f"overhead {100 * (level.wall / level.reference - 1):+.1f}%, spin-up {level.spin_up:.2f}s",
                  flush=True)

    header = ("executor", "parallel", "startup s", "spin-up s", "wall s", "reference s", "ratio",
              "overhead", "ms/trial", "workers", "threads", "rows")
    print()
    print("  ".join(f"{h:>11}" for h in header))
    for kind, par, startup, spin_up, wall, ref, ratio, per_trial, pids, threads, rows in table:
        cells = (kind, par, f"{startup:.2f}", f"{spin_up:.2f}", f"{wall:.2f}", f"{ref:.2f}", f"{ratio:.3f}",
                 f"{100 * (ratio - 1):+.1f}%", f"{per_trial:.0f}", pids, ",".join(map(str, threads)), rows)
        print("  ".join(f"{c!s:>11}" for c in cells))
    print("\nMedians over the levels. startup: making the executor (Ray: starting or joining Ray); "
          "spin-up: run() to the first trial starting (Ray: the level's worker actors start, import "
          "torch); reference = sum of the trials' own wall times / parallelism; ratio = wall / "
          "reference; ms/trial = (wall - spin-up - reference) x parallelism / trials, the cost per "
          "trial once workers are up; workers = distinct processes that ran a level's trials.")


if __name__ == "__main__":
    main()
