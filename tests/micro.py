"""The micro sweep the tests share: 3 levels of tiny proxies (widths 16 -> 64) on the default
corpus, a few seconds with the local executor. Override any field per test."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from telescope.config import parse_config
from telescope.runs.executor import make_executor
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep

MICRO: dict[str, Any] = {
    "name": "micro",
    "model": {"depth": 1, "head_dim": 16, "seq_len": 32},
    "widths": {"base": 16, "calibration": 64, "target": 256},
    "train": {"steps": 10, "batch_size": 4, "warmup_steps": 2, "eval_batches": 2, "device": "cpu"},
    "search": {"lr": {"lo": 0.004, "hi": 0.256, "points": 3}, "weight_decay": {"lo": 0.01, "hi": 0.1, "points": 3}},
    "narrowing": {"min_points": 1},
    "executor": {"kind": "local", "cpus_per_trial": 1, "max_concurrent": 2},
}


def micro_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """MICRO with some fields replaced, e.g. micro_config(train={"steps": 4})."""
    config = copy.deepcopy(MICRO)
    for section, fields in sections.items():
        if isinstance(fields, dict):
            config.setdefault(section, {}).update(fields)
        else:
            config[section] = fields
    return config


def write_micro_config(path: Path, **sections: dict[str, Any]) -> Path:
    path.write_bytes(tomli_w.dumps(micro_config(**sections)).encode())
    return path


# `telescope trial` small enough for a test: three steps of width 32 on the CPU.
TINY_TRIAL = ["trial", "--width", "32", "--head-dim", "16", "--steps", "3"]
TINY_TRIAL += ["--batch-size", "2", "--seq-len", "16", "--device", "cpu"]


def sweep_command(config: Path, url: str, store: Path, *options: str) -> list[str]:
    """`telescope sweep CONFIG --db URL --store STORE [options]`, as a process runs it."""
    return [sys.executable, "-m", "telescope", "sweep", str(config), "--db", url, "--store", str(store), *options]


def wait_for(predicate, timeout: float = 120.0, what: str = "timed out") -> None:
    """Poll `predicate` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def run_micro_sweep(url: str, store: Path, name: str = "micro", **sections: dict[str, Any]) -> dict[str, Any]:
    """Run a micro sweep to the end in-process; returns its result as stored (a dict)."""
    return run_config_sweep(url, store, name, micro_config(**sections))


def run_config_sweep(url: str, store: Path, name: str, document: dict[str, Any]) -> dict[str, Any]:
    """Run a whole sweep config (a TOML document's dict) to the end in-process; its result as stored."""
    config = parse_config(document)
    executor = make_executor(config.executor)
    try:
        with Database(url) as db:
            return run_sweep(config, db, MetricsStore(store), name, executor=executor).to_dict()
    finally:
        executor.close()


# The smallest sweep that still has every part (3x3 -> 1 -> done, widths 16 -> 32): for tests
# that need a finished sweep and do not look at its numbers.
SMALLEST: dict[str, dict[str, Any]] = {
    "model": {"seq_len": 16},
    "widths": {"base": 16, "calibration": 32, "target": 64},
    "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "eval_batches": 1},
    "search": {"lr": {"lo": 0.01, "hi": 0.04, "points": 3}, "weight_decay": {"lo": 0.05, "hi": 0.2, "points": 3}},
}
