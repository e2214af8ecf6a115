"""Every table of the telescope database, in one place.

Three tables hold the data (`sweeps`, `levels`, `trials`) and a one-row table
holds the schema version. Swept hyperparameters, losses and costs are typed
columns so that a person can write
`SELECT lr, weight_decay, val_loss FROM trials ORDER BY val_loss` without
pivots. Levels and trials refer to their sweep by its unique name, which is
also the `sweep=` partition of the Parquet step metrics, so SQL joins read
naturally: `JOIN sweeps ON sweeps.name = trials.sweep`.

Bump SCHEMA_VERSION whenever a table changes; a newer database is then refused with
a message instead of failing halfway through a sweep, and an older one is upgraded in
place where UPGRADES says how (added columns only), else refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from telescope.spec import Status

SCHEMA_VERSION = 2
VERSION_TABLE = "telescope_version"
LEASE_TABLE = "telescope_leases"  # PostgreSQL only, created on first use (telescope.storage.lease)
DATA_TABLES = ("sweeps", "levels", "trials")

SWEEP_KINDS = ("sweep", "transfer-check", "batch-study")
SWEEP_STATUSES = ("pending", "running", "completed", "failed", "stopped")
LEVEL_STATUSES = ("planned", "running", "completed")
TRIAL_STATUSES = tuple(s.value for s in Status)

NAME_LENGTH = 200


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is
    stored as naive UTC and marked UTC again when read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(timezone.utc)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# version -> the statements that bring a database of that version to the next one
UPGRADES: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE trials ADD COLUMN content_key VARCHAR(64)",
        "ALTER TABLE trials ADD COLUMN reused_from TEXT",
        "CREATE INDEX ix_trials_content_key ON trials (content_key)",
    ),
}


class Base(DeclarativeBase):
    pass


class SchemaVersionModel(Base):
    """One row: the schema version this database was created with."""

    __tablename__ = VERSION_TABLE
    __table_args__ = (CheckConstraint("id = 1", name="telescope_version_one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    library_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SweepModel(Base):
    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(_one_of("kind", SWEEP_KINDS), name="sweeps_kind"),
        CheckConstraint(_one_of("status", SWEEP_STATUSES), name="sweeps_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))
    parametrization: Mapped[str] = mapped_column(String(64))
    base_width: Mapped[int] = mapped_column(Integer)
    calibration_width: Mapped[int] = mapped_column(Integer)
    target_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class LevelModel(Base):
    __tablename__ = "levels"
    __table_args__ = (
        UniqueConstraint("sweep", "level", name="levels_sweep_level"),
        CheckConstraint(_one_of("status", LEVEL_STATUSES), name="levels_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("sweeps.name", ondelete="CASCADE"))
    level: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    grid_json: Mapped[str] = mapped_column(Text)  # the level's points: [{"lr": ..., "weight_decay": ...}, ...]
    n_points: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    best_lr: Mapped[float | None] = mapped_column(Double, nullable=True)
    best_weight_decay: Mapped[float | None] = mapped_column(Double, nullable=True)
    best_muon_lr_ratio: Mapped[float | None] = mapped_column(Double, nullable=True)
    best_loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    warnings: Mapped[str | None] = mapped_column(Text, nullable=True)  # one warning per line
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TrialModel(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("sweep", "trial_key", name="trials_sweep_key"),
        CheckConstraint(_one_of("status", TRIAL_STATUSES), name="trials_status"),
        Index("trials_sweep_level", "sweep", "level"),
        Index("trials_sweep_status", "sweep", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("sweeps.name", ondelete="CASCADE"))
    level: Mapped[int] = mapped_column(Integer)
    trial_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    width: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Double)
    weight_decay: Mapped[float] = mapped_column(Double)
    muon_lr_ratio: Mapped[float] = mapped_column(Double)
    seed: Mapped[int] = mapped_column(BigInteger)
    parametrization: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    # Losses are NULL when not finite (or not yet known); `status` says why.
    train_loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops: Mapped[float | None] = mapped_column(Double, nullable=True)
    wall_time: Mapped[float | None] = mapped_column(Double, nullable=True)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fingerprint: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    spec_json: Mapped[str] = mapped_column(Text)  # the full TrialSpec as JSON
    # Everything that decides the trial's numbers, hashed (telescope.runs.content): a
    # completed trial with the same key, in any run, is reused instead of trained again.
    content_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reused_from: Mapped[str | None] = mapped_column(Text, nullable=True)  # "SWEEP/TRIAL_KEY" it was copied from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseModel(Base):
    """Who runs a sweep, on PostgreSQL: one row per sweep being run (telescope.storage.lease).
    Not part of the data: an older telescope ignores it, so adding it needs no new version."""

    __tablename__ = LEASE_TABLE

    sweep: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))  # a random token per driver
    host: Mapped[str] = mapped_column(String(255))  # the holder's machine and process
    pid: Mapped[int] = mapped_column(Integer)
    server_started_at: Mapped[datetime] = mapped_column(UTCDateTime)  # pg_postmaster_start_time() then
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
