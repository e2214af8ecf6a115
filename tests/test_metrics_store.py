"""Parquet step metrics: one atomic file per trial, readable as one hive-partitioned dataset."""

from __future__ import annotations

import math

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from telescope.errors import StorageError, TelescopeError
from telescope.spec import StepMetrics
from telescope.storage.metrics import MetricsStore


def curve(n: int, start: float = 5.0) -> list[StepMetrics]:
    return [
        StepMetrics(
            step=i,
            tokens=(i + 1) * 1024,
            train_loss=start - 0.1 * i,
            lr=0.01 * min(1, (i + 1) / 3),
            grad_norm=1.0 / (i + 1),
            elapsed=0.25 * i,
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path) -> MetricsStore:
    s = MetricsStore(tmp_path / "metrics")
    s.write("demo", 0, "L0-a", curve(4))
    s.write("demo", 0, "L0-b", curve(3, start=6.0))
    s.write("demo", 1, "L1-a", curve(2))
    s.write("other", 0, "L0-a", curve(5))
    return s


def test_layout_is_one_hive_partitioned_file_per_trial(store):
    files = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())
    assert files == [
        "sweep=demo/level=0/L0-a.parquet",
        "sweep=demo/level=0/L0-b.parquet",
        "sweep=demo/level=1/L1-a.parquet",
        "sweep=other/level=0/L0-a.parquet",
    ]
    assert store.exists("demo", 1, "L1-a") and not store.exists("demo", 1, "L1-b")
    assert pq.read_table(store.path("demo", 0, "L0-a")).column("trial_key").to_pylist() == ["L0-a"] * 4


def test_read_round_trips_values_and_filters(store):
    frame = store.read("demo")
    assert list(frame.columns) == [
        "sweep",
        "level",
        "trial_key",
        "step",
        "tokens",
        "train_loss",
        "lr",
        "grad_norm",
        "elapsed",
    ]
    assert len(frame) == 9 and set(frame["sweep"]) == {"demo"}
    one = store.read("demo", level=0, trial_key="L0-a")
    expected = curve(4)
    assert one["step"].tolist() == [m.step for m in expected]
    assert one["train_loss"].tolist() == pytest.approx([m.train_loss for m in expected])
    assert one["lr"].tolist() == pytest.approx([m.lr for m in expected])
    assert one["level"].tolist() == [0] * 4 and str(one["step"].dtype) == "int64"
    assert store.read("demo", level=1)["trial_key"].unique().tolist() == ["L1-a"]
    assert store.read("demo", trial_key="L0-b")["level"].tolist() == [0] * 3
    empty = store.read("missing")
    assert empty.empty and list(empty.columns) == list(frame.columns)


def test_pandas_pyarrow_and_duckdb_read_the_store_as_one_dataset(store):
    frame = pd.read_parquet(store.root)
    assert len(frame) == 14 and {"sweep", "level", "trial_key", "step"} <= set(frame.columns)
    assert sorted(frame["sweep"].astype(str).unique()) == ["demo", "other"]
    table = ds.dataset(store.root, partitioning="hive").to_table()
    assert table.num_rows == 14
    rows = duckdb.sql(
        f"SELECT sweep, level, count(*) AS n FROM read_parquet('{store.root}/**/*.parquet', hive_partitioning=true)"
        " GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [("demo", 0, 7), ("demo", 1, 2), ("other", 0, 5)]


def test_rewrite_replaces_atomically_and_leaves_no_temp_files(store, monkeypatch):
    store.write("demo", 0, "L0-a", curve(6))
    assert len(store.read("demo", 0, "L0-a")) == 6

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(TelescopeError, match=r"cannot write .*L0-a.parquet: disk full"):
        store.write("demo", 0, "L0-a", curve(2))
    assert len(store.read("demo", 0, "L0-a")) == 6  # the previous file survived the failed write
    assert sorted(p.name for p in store.path("demo", 0, "L0-a").parent.iterdir()) == ["L0-a.parquet", "L0-b.parquet"]


def test_empty_and_non_finite_curves_are_kept(tmp_path):
    store = MetricsStore(tmp_path)
    store.write("s", 0, "failed-early", [])
    assert store.exists("s", 0, "failed-early") and store.read("s").empty
    store.write(
        "s", 0, "diverged", [StepMetrics(0, 64, 5.0, 0.1, 1.0, 0.0), StepMetrics(1, 128, math.nan, 0.1, math.inf, 0.1)]
    )
    losses = store.read("s", trial_key="diverged")["train_loss"].tolist()
    assert losses[0] == 5.0 and math.isnan(losses[1])


@pytest.mark.parametrize(
    "sweep, key", [("../up", "k"), ("a/b", "k"), ("ok", "../k"), ("ok", "a/b"), ("ok", ".hidden"), ("", "k")]
)
def test_names_that_would_escape_or_hide_are_refused(tmp_path, sweep, key):
    store = MetricsStore(tmp_path / "m")
    with pytest.raises(StorageError, match="invalid"):
        store.write(sweep, 0, key, curve(1))
    assert not (tmp_path / "m").exists()


def test_a_file_as_store_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is a file"):
        MetricsStore(tmp_path / "file")


def test_delete_sweep_removes_only_that_sweep(store):
    store.delete_sweep("demo")
    assert store.read("demo").empty and len(store.read("other")) == 5
