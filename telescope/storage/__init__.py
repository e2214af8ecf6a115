"""Where sweeps live: the SQL database (sweeps, levels, trials), the Parquet step
metrics, and read-only SQL over both."""

from telescope.storage.database import (
    Database,
    LevelRow,
    SweepRow,
    SweepSummary,
    TrialRow,
    config_hash,
)
from telescope.storage.metrics import DEFAULT_STORE, MetricsStore
from telescope.storage.query import QueryResult, run_query

__all__ = [
    "DEFAULT_STORE",
    "Database",
    "LevelRow",
    "MetricsStore",
    "QueryResult",
    "SweepRow",
    "SweepSummary",
    "TrialRow",
    "config_hash",
    "run_query",
]
