"""Orchestration overhead of a whole sweep, per executor (DESIGN.md section 5).

Runs the README's sweep (examples/tiny-cpu.toml: 3 levels, 43 real proxy trials of a few
seconds) through `run_sweep` with the local and the Ray executor, into a fresh database
each time, and compares its wall time with the reference measured in the same run: the
sum of the trials' own wall times (from the database) divided by the parallelism, which
is what a perfect scheduler with no database, Parquet, grids, Tune or level barriers
would take.

`pool` is what a user would hand-roll instead: the same trials (those of the first
executor's last sweep), level by level, through one `multiprocessing.Pool` of 2 processes
over `run_trial`, with no database, metrics or progress; its start-up is the pool's.

    .venv/bin/python benchmarks/bench_executors.py [--repeats 3] [--steps 120] [--executors local,ray,pool]

overhead = wall / reference - 1 (goal: under 10% on 2 CPUs). Start-up (once per sweep,
not per level) is shown apart and left out of `wall`.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from telescope.config import load_config
from telescope.proxy.train import run_trial
from telescope.spec import TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep
from telescope.trials import make_executor

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.toml"


def one_sweep(config, parallelism: int) -> tuple[float, float, float, int, list[list[TrialSpec]]]:
    """(executor start-up s, sweep wall s, reference s, trials, specs per level) for one fresh sweep."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        executor = make_executor(config.executor)
        startup = time.perf_counter() - start
        try:
            with Database(f"sqlite:///{tmp}/bench.db") as db:
                start = time.perf_counter()
                run_sweep(config, db, MetricsStore(f"{tmp}/store"), "bench", executor=executor,
                          console=Console(file=open(os.devnull, "w")))  # fmt: skip
                wall = time.perf_counter() - start
                trials = db.trials("bench")
        finally:
            executor.close()
    levels = [[t.spec for t in trials if t.level == level] for level in sorted({t.level for t in trials})]
    return startup, wall, sum(t.wall_time or 0.0 for t in trials) / parallelism, len(trials), levels


def one_pool(levels: list[list[TrialSpec]], processes: int = 2) -> tuple[float, float, float, int, list]:
    """The same trials through a hand-rolled multiprocessing.Pool over run_trial, level by level."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_warm) as pool:
        pool.map(_warm_task, range(processes))  # the workers import torch before the clock starts
        startup = time.perf_counter() - start
        start = time.perf_counter()
        results = [result for specs in levels for result in pool.map(run_trial, specs, chunksize=1)]
        wall = time.perf_counter() - start
    return startup, wall, sum(r.wall_time for r in results) / processes, len(results), levels


def _warm() -> None:
    torch.set_num_threads(1)


def _warm_task(_: int) -> None:
    from telescope.proxy.data import load_data

    load_data("stdlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="sweeps per executor (medians are reported)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the config's)")
    parser.add_argument("--executors", default="local,ray")
    args = parser.parse_args()
    base = load_config(CONFIG)
    if args.steps:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=args.steps))
    cpus = len(os.sched_getaffinity(0))
    print(f"{CONFIG.name}: {base.train.steps} steps per trial, {args.repeats} sweeps per executor, {cpus} CPUs")
    rows = []
    kinds = args.executors.split(",")
    if kinds[0] == "pool":
        raise SystemExit("pool runs the trials of the executor before it: list it after local or ray")
    last_levels: list[list[TrialSpec]] = []
    for kind in kinds:
        config = dataclasses.replace(base, executor=dataclasses.replace(base.executor, kind="local" if kind == "pool" else kind))
        slots = int(cpus // config.executor.cpus_per_trial)
        parallelism = 1 if kind == "local" else min(slots, config.executor.max_concurrent or slots)
        if kind == "pool":
            parallelism = 2
            runs = [one_pool(last_levels) for _ in range(args.repeats)]
        else:
            runs = [one_sweep(config, parallelism) for _ in range(args.repeats)]
            last_levels = runs[-1][4]
        for startup, wall, reference, n, _ in runs:
            print(f"  {kind}: {n} trials, start-up {startup:.1f}s, wall {wall:.1f}s, reference {reference:.1f}s, "
                  f"overhead {100 * (wall / reference - 1):+.1f}%", flush=True)
        startup, wall, reference = (statistics.median(r[i] for r in runs) for i in range(3))
        rows.append((kind, parallelism, startup, wall, reference, wall / reference))
    print(f"\n{'executor':>9}{'parallel':>10}{'start-up s':>12}{'wall s':>9}{'reference s':>13}{'ratio':>8}{'overhead':>10}")
    for kind, parallelism, startup, wall, reference, ratio in rows:
        print(f"{kind:>9}{parallelism:>10}{startup:>12.1f}{wall:>9.1f}{reference:>13.1f}{ratio:>8.3f}"
              f"{100 * (ratio - 1):>+9.1f}%")
    print("\nMedians. wall: run_sweep from the first level to the answer; reference: the trials' own "
          "wall times / parallelism; ratio = wall / reference.")


if __name__ == "__main__":
    main()
