"""A whole sweep per runner: telescope's executors, unpacked and packed, against a hand-rolled pool.

Runs the README's sweep (examples/tiny-cpu.toml: 3 levels, 43 real proxy trials) through
`run_sweep` into a fresh database each time, with:

- `local`: the in-process executor, one trial at a time (pack = 1);
- `ray`: Ray Tune, 2 trials at a time, one CPU each (pack = 1);
- `ray-packed`: the same, with the trials of a level trained in packs (pack = 8, balanced
  over the 2 slots: 25 trials -> 4 packs, 9 -> 2);
- `local-packed`: the in-process executor with packs, torch given every CPU;
- `pool`: what a user would hand-roll instead: the same trials (those of the first
  sweep), level by level, through one `multiprocessing.Pool` of 2 processes over
  `run_trial`, with no database, metrics or progress.

    .venv/bin/python benchmarks/bench_executors.py [--repeats 3] [--steps 120] [--runners ray,ray-packed,pool]

Per runner: wall (the first trial's start to the answer; start-up, once per sweep, shown
apart: connecting, starting and warming the workers, preparing the sweep), the
reference `ideal` measured in the same run (the trials' own wall times, a packed trial
counting its share of its pack, summed and divided by the parallelism: a scheduler with
no database, Parquet, Tune or level barriers), wall / ideal, and wall / the pool's wall.
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

from telescope.config import SweepConfig, load_config
from telescope.runs.executor import make_executor
from telescope.spec import TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep
from telescope.training.train import run_trial

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.toml"
CPUS = len(os.sched_getaffinity(0))
RUNNERS = {  # name: (executor kind, pack, cpus per trial)
    "local": ("local", 1, 1.0),
    "ray": ("ray", 1, 1.0),
    "ray-packed": ("ray", 8, 1.0),
    "local-packed": ("local", 8, float(CPUS)),
}


@dataclasses.dataclass
class Run:
    startup: float
    wall: float
    ideal: float
    trials: int


def one_sweep(config: SweepConfig, parallelism: int) -> tuple[Run, list[list[TrialSpec]]]:
    """One fresh sweep, and its trials' specs level by level."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()  # the clock of the database's timestamps
        executor = make_executor(config.executor)
        try:
            with Database(f"sqlite:///{tmp}/bench.db") as db:
                run_sweep(
                    config,
                    db,
                    MetricsStore(f"{tmp}/store"),
                    "bench",
                    executor=executor,
                    console=Console(file=open(os.devnull, "w")),
                )
                end = time.time()
                trials = db.trials("bench")
        finally:
            executor.close()
    # The clock starts with the first trial, as the pool's does: Ray's workers start up (spawn,
    # import torch) while the sweep prepares, like the pool's processes before its clock.
    first = min(t.started_at for t in trials).timestamp()
    levels = [[t.spec for t in trials if t.level == level] for level in sorted({t.level for t in trials})]
    ideal = sum(t.wall_time or 0.0 for t in trials) / parallelism
    return Run(first - start, end - first, ideal, len(trials)), levels


def one_pool(levels: list[list[TrialSpec]], processes: int = 2) -> Run:
    """The same trials through a hand-rolled multiprocessing.Pool over run_trial, level by level."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_warm) as pool:
        pool.map(_warm_task, range(processes))  # the workers import torch before the clock starts
        startup = time.perf_counter() - start
        start = time.perf_counter()
        results = [result for specs in levels for result in pool.map(run_trial, specs, chunksize=1)]
        wall = time.perf_counter() - start
    return Run(startup, wall, sum(r.wall_time for r in results) / processes, len(results))


def _warm() -> None:
    torch.set_num_threads(1)


def _warm_task(_: int) -> None:
    from telescope.data import load_data

    load_data("stdlib")


def runner_config(base: SweepConfig, name: str) -> tuple[SweepConfig, int]:
    kind, pack, cpus = RUNNERS[name]
    executor = dataclasses.replace(base.executor, kind=kind, pack=pack, cpus_per_trial=cpus)
    slots = int(CPUS // cpus)
    parallelism = 1 if kind == "local" else min(slots, executor.max_concurrent or slots)
    return dataclasses.replace(base, executor=executor), parallelism


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every runner (medians are reported)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the config's)")
    parser.add_argument("--runners", default="ray,ray-packed,pool", help=f"of {', '.join([*RUNNERS, 'pool'])}")
    args = parser.parse_args()
    names = args.runners.split(",")
    unknown = [n for n in names if n not in RUNNERS and n != "pool"]
    if unknown or names == ["pool"]:
        raise SystemExit(f"--runners: unknown {unknown}" if unknown else "pool needs a telescope runner first")
    base = load_config(CONFIG)
    if args.steps:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=args.steps))
    print(f"{CONFIG.name}: {base.train.steps} steps per trial, {args.repeats} rounds of every runner, {CPUS} CPUs")
    order = [n for n in names if n != "pool"] + (["pool"] if "pool" in names else [])
    runs: dict[str, list[Run]] = {name: [] for name in order}
    parallel: dict[str, int] = {"pool": 2}
    levels: list[list[TrialSpec]] = []
    for _ in range(args.repeats):  # rounds, so that a machine that slows down for a while hits every runner
        for name in order:
            if name == "pool":
                run = one_pool(levels)
            else:
                config, parallel[name] = runner_config(base, name)
                run, these = one_sweep(config, parallel[name])
                levels = levels or these
            runs[name].append(run)
            print(
                f"  {name}: {run.trials} trials, start-up {run.startup:.1f}s, wall {run.wall:.1f}s, "
                f"ideal {run.ideal:.1f}s, wall/ideal {run.wall / run.ideal:.3f}",
                flush=True,
            )
    print(
        f"\n{'runner':>13}{'parallel':>10}{'start-up s':>12}{'wall s':>9}{'ideal s':>9}{'wall/ideal':>12}"
        f"{'wall/pool':>11}"
    )
    for name in sorted(order, key=lambda n: n != "pool"):
        rs = runs[name]
        median = {f.name: statistics.median(getattr(r, f.name) for r in rs) for f in dataclasses.fields(Run)}
        over_ideal = statistics.median(r.wall / r.ideal for r in rs)
        # Against the pool's sweep of the same round.
        vs_pool = (
            f"{statistics.median(r.wall / p.wall for r, p in zip(rs, runs['pool'])):>11.3f}"
            if "pool" in runs
            else f"{'-':>11}"
        )
        print(
            f"{name:>13}{parallel[name]:>10}{median['startup']:>12.1f}{median['wall']:>9.1f}{median['ideal']:>9.1f}"
            f"{over_ideal:>12.3f}{vs_pool}"
        )
    print(
        "\nMedians over the rounds (ratios: per round). wall: from the first trial's start to the answer; "
        "ideal: the trials' own wall times / parallelism (a packed trial: its share of the pack's)."
    )


if __name__ == "__main__":
    main()
