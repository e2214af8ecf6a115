"""Where sweeps live: the SQL database (sweeps, levels, trials), the Parquet step
metrics, and read-only SQL over both."""

from telescope.storage.database import Database
from telescope.storage.metrics import DEFAULT_STORE, MetricsStore
from telescope.storage.query import QueryResult, run_query
from telescope.storage.rows import LevelRow, SweepRow, SweepSummary, TrialRow, config_hash

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
