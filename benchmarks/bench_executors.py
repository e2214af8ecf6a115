"""Orchestration overhead of a whole sweep, per executor (DESIGN.md section 5).

Runs the README's sweep (examples/tiny-cpu.toml: 3 levels, 43 real proxy trials of a few
seconds) through `run_sweep` with the local and the Ray executor, into a fresh database
each time, and compares its wall time with the reference measured in the same run: the
sum of the trials' own wall times (from the database) divided by the parallelism, which
is what a perfect scheduler with no database, Parquet, grids or Tune would take.

    .venv/bin/python benchmarks/bench_executors.py [--repeats 3] [--steps 120]

overhead = wall / reference - 1 (goal: under 10% on 2 CPUs). Ray's own start-up (once
per sweep, not per level) is shown apart and left out of `wall`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from telescope.config import load_config
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep
from telescope.trials import make_executor

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.toml"


def one_sweep(config, parallelism: int) -> tuple[float, float, float, int]:
    """(executor start-up s, sweep wall s, reference s, trials) for one fresh sweep."""
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
    return startup, wall, sum(t.wall_time or 0.0 for t in trials) / parallelism, len(trials)


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
    for kind in args.executors.split(","):
        config = dataclasses.replace(base, executor=dataclasses.replace(base.executor, kind=kind))
        slots = int(cpus // config.executor.cpus_per_trial)
        parallelism = 1 if kind == "local" else min(slots, config.executor.max_concurrent or slots)
        runs = [one_sweep(config, parallelism) for _ in range(args.repeats)]
        for startup, wall, reference, n in runs:
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
