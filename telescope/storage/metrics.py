"""Step metrics in Parquet: one file per trial, hive-partitioned by sweep and level.

Layout: `<root>/sweep=<name>/level=<k>/<trial_key>.parquet`. Each file holds the
columns of `telescope.spec.StepMetrics` plus `trial_key`; `sweep` and `level`
come from the folder names, so the whole store reads as one dataset:

    pandas.read_parquet(root)
    pyarrow.dataset.dataset(root, partitioning="hive")
    duckdb: SELECT * FROM read_parquet('<root>/**/*.parquet', hive_partitioning=true)

Files are written to a hidden temporary name and renamed into place, so a
reader (or a killed writer) never sees half a file.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from telescope.errors import StorageError, TelescopeError
from telescope.files import atomic_write, check_writable_folder
from telescope.spec import StepMetrics

DEFAULT_STORE = "telescope-metrics"

STEP_SCHEMA = pa.schema(
    [
        ("trial_key", pa.string()),
        ("step", pa.int64()),
        ("tokens", pa.int64()),
        ("train_loss", pa.float64()),
        ("lr", pa.float64()),
        ("grad_norm", pa.float64()),
        ("elapsed", pa.float64()),
    ]
)
PARTITION_SCHEMA = pa.schema([("sweep", pa.string()), ("level", pa.int64())])

# Sweep names become folder names and hive partition values (which readers
# URI-decode), so they are limited to characters that survive both unchanged.
_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_TRIAL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]{0,199}")


def _check_name(what: str, value: str, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise StorageError(
            f"invalid {what} {value!r}: use letters, digits and {allowed} "
            "(starting with a letter or digit, at most 200 characters)"
        )
    return value


def check_sweep_name(name: str) -> str:
    """Return `name` if it can name a sweep, else raise StorageError saying why."""
    return _check_name("sweep name", name, _SWEEP_NAME, ". _ + -")


def check_trial_key(key: str) -> str:
    """Return `key` if it can name a trial (and its Parquet file), else raise StorageError."""
    return _check_name("trial key", key, _TRIAL_KEY, ". _ + = , -")


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise StorageError(f"invalid level {level!r}: a level is an integer >= 0")
    return level


def is_readable(path: Path) -> bool:
    """Whether `path` is a whole Parquet file of step metrics (a truncated file has no footer)."""
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return False
    return set(STEP_SCHEMA.names) <= names


def readable_metrics_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The store's trial files, split into those that read and those that do not."""
    files = sorted(p for p in root.glob("sweep=*/level=*/*.parquet") if p.is_file()) if root.is_dir() else []
    readable = {f: is_readable(f) for f in files}
    return [f for f, ok in readable.items() if ok], [f for f, ok in readable.items() if not ok]


class MetricsStore:
    """The Parquet step-metrics store rooted at one folder."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else DEFAULT_STORE)
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"metrics store {str(self.root)!r} is a file, not a folder")

    def path(self, sweep: str, level: int, trial_key: str) -> Path:
        """Where the trial's file lives (whether or not it exists)."""
        return (
            self.root
            / f"sweep={check_sweep_name(sweep)}"
            / f"level={_check_level(level)}"
            / f"{check_trial_key(trial_key)}.parquet"
        )

    def exists(self, sweep: str, level: int, trial_key: str) -> bool:
        """Whether the trial's file is there and reads (not truncated, not deleted)."""
        return is_readable(self.path(sweep, level, trial_key))

    def write(self, sweep: str, level: int, trial_key: str, rows: Sequence[StepMetrics]) -> Path:
        """Write (or replace) one trial's step metrics atomically; an empty `rows` writes
        an empty file, so every finished trial has one."""
        target = self.path(sweep, level, trial_key)
        table = pa.table(
            {
                "trial_key": pa.array([trial_key] * len(rows), pa.string()),
                "step": pa.array([r.step for r in rows], pa.int64()),
                "tokens": pa.array([r.tokens for r in rows], pa.int64()),
                "train_loss": pa.array([r.train_loss for r in rows], pa.float64()),
                "lr": pa.array([r.lr for r in rows], pa.float64()),
                "grad_norm": pa.array([r.grad_norm for r in rows], pa.float64()),
                "elapsed": pa.array([r.elapsed for r in rows], pa.float64()),
            },
            schema=STEP_SCHEMA,
        )
        # The temporary file's leading dot and .tmp suffix hide it from pyarrow, pandas and
        # DuckDB globs while it is being written.
        with atomic_write(target, make_parents=True) as f:
            pq.write_table(table, f)
        return target

    def copy(self, source: tuple[str, int, str], sweep: str, level: int, trial_key: str) -> Path:
        """Write the step metrics of trial `source` (sweep, level, key) as those of another
        trial (a reused one), atomically."""
        table = pq.read_table(self.path(*source), schema=STEP_SCHEMA)
        table = table.set_column(0, "trial_key", pa.array([trial_key] * table.num_rows, pa.string()))
        target = self.path(sweep, level, trial_key)
        with atomic_write(target, make_parents=True) as f:
            pq.write_table(table, f)
        return target

    def check_writable(self) -> None:
        """A StorageError now, rather than after the first trial, if the store cannot be written."""
        try:
            check_writable_folder(self.root)
        except TelescopeError as e:
            raise StorageError(f"metrics store: {e}") from None

    def read(self, sweep: str, level: int | None = None, trial_key: str | None = None) -> pd.DataFrame:
        """Step metrics of a sweep, optionally of one level and/or one trial, as a DataFrame
        with columns sweep, level, trial_key, step, tokens, train_loss, lr, grad_norm,
        elapsed, sorted by level, trial_key and step. Empty (with those columns) if none."""
        sweep_dir = self.root / f"sweep={check_sweep_name(sweep)}"
        level_glob = f"level={_check_level(level)}" if level is not None else "level=*"
        file_glob = f"{check_trial_key(trial_key)}.parquet" if trial_key is not None else "*.parquet"
        # An unreadable file (truncated by a full disk, say) is left out; the sweep reruns its trial.
        files = sorted(str(p) for p in sweep_dir.glob(f"{level_glob}/{file_glob}") if p.is_file() and is_readable(p))
        columns = [f.name for f in PARTITION_SCHEMA] + [f.name for f in STEP_SCHEMA]
        if not files:
            return pa.schema(list(PARTITION_SCHEMA) + list(STEP_SCHEMA)).empty_table().to_pandas()
        dataset = ds.dataset(
            files,
            schema=pa.schema(list(STEP_SCHEMA) + list(PARTITION_SCHEMA)),
            format="parquet",
            partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
            partition_base_dir=str(self.root),
        )
        frame = dataset.to_table().to_pandas()[columns]
        return frame.sort_values(["level", "trial_key", "step"], kind="stable").reset_index(drop=True)

    def delete_sweep(self, sweep: str) -> None:
        """Remove every metrics file of a sweep (no error if there are none)."""
        shutil.rmtree(self.root / f"sweep={check_sweep_name(sweep)}", ignore_errors=True)
