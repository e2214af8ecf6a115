"""The sweep database: sweeps, their levels and their trials, through SQLAlchemy 2.0.

The sweep driver is the only writer. Every method is one transaction, and the
trial methods take batches, so a level of a hundred trials costs a handful of
round trips whether the database is a local SQLite file or a team PostgreSQL
server.

    db = Database(url, create=True)            # None: ./telescope.db
    db.create_sweep("demo", config, parametrization="paper", base_width=64, calibration_width=256)
    db.plan_level("demo", 0, width=64, grid=[{"lr": 0.01, "weight_decay": 0.1}, ...])
    db.add_trials("demo", 0, [(key, spec), ...])   # idempotent by key
    db.mark_running("demo", [key, ...])
    db.record_results("demo", [(key, result), ...])
    db.finish_level("demo", 0, best={"lr": ..., "weight_decay": ...}, best_loss=1.9)
    db.update_sweep("demo", status="completed", result={...})
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import math
import sqlite3
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Engine, bindparam, case, create_engine, delete, event, func, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from telescope.errors import StorageError
from telescope.spec import FINISHED, SWEEPABLE, Status, TrialResult, TrialSpec
from telescope.storage.metrics import check_sweep_name, check_trial_key
from telescope.storage.schema import (
    DATA_TABLES,
    LEVEL_STATUSES,
    SCHEMA_VERSION,
    SWEEP_KINDS,
    SWEEP_STATUSES,
    VERSION_TABLE,
    Base,
    LevelModel,
    SchemaVersionModel,
    SweepModel,
    TrialModel,
)

DEFAULT_DB = "telescope.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SQLITE_BUSY_TIMEOUT_S = 30.0
_CREATE_LOCK_KEY = 0  # the lock taken while creating the tables (sweep leases use keys >= 1)


# ---------------------------------------------------------------------------
# Rows handed back to callers: plain frozen dataclasses, detached from SQLAlchemy.


@dataclass(frozen=True)
class SweepRow:
    name: str
    kind: str
    status: str
    config: dict[str, Any]
    config_hash: str
    parametrization: str
    base_width: int
    calibration_width: int
    target_width: int | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LevelRow:
    sweep: str
    level: int
    width: int
    grid: list[dict[str, Any]]
    status: str
    best_lr: float | None
    best_weight_decay: float | None
    best_muon_lr_ratio: float | None
    best_loss: float | None
    warnings: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def best(self) -> dict[str, float] | None:
        """The best point as {hyperparameter: value}, or None before the level finished."""
        point = {
            name: value
            for name, value in zip(SWEEPABLE, (self.best_lr, self.best_weight_decay, self.best_muon_lr_ratio))
            if value is not None
        }
        return point or None


@dataclass(frozen=True)
class TrialRow:
    sweep: str
    level: int
    key: str
    width: int
    lr: float
    weight_decay: float
    muon_lr_ratio: float
    seed: int
    parametrization: str
    status: Status
    train_loss: float | None
    val_loss: float | None
    tokens: int | None
    flops: float | None
    wall_time: float | None
    steps: int | None
    device: str | None
    error: str | None
    attempts: int
    fingerprint: dict[str, Any] | None
    spec: TrialSpec
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def result(self) -> TrialResult | None:
        """The stored outcome as a TrialResult (non-finite losses read back as None),
        or None while the trial is pending or running."""
        if not self.finished:
            return None
        return TrialResult(
            status=self.status,
            train_loss=self.train_loss,
            val_loss=self.val_loss,
            tokens=self.tokens or 0,
            flops=self.flops or 0.0,
            wall_time=self.wall_time or 0.0,
            steps=self.steps or 0,
            device=self.device or "",
            error=self.error,
            fingerprint=self.fingerprint or {},
        )


@dataclass(frozen=True)
class SweepSummary:
    """One line of `telescope status`: a sweep and its progress."""

    name: str
    kind: str
    status: str
    levels_done: int
    levels_planned: int
    trials_done: int  # completed + diverged + failed
    trials_total: int
    best_loss: float | None  # best loss of the widest finished level
    created_at: datetime


@dataclass(frozen=True)
class SweepDetail:
    """One sweep as `telescope status SWEEP` shows it."""

    sweep: SweepRow
    levels: list[LevelRow]
    trials: list[TrialRow]


# ---------------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON: equal configs hash equal, whatever the key order."""
    return hashlib.sha256(_canonical_json(config).encode()).hexdigest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def resolve_url(url: str | None) -> URL:
    """The SQLAlchemy URL for `--db`: None means ./telescope.db, a plain path means a SQLite
    file, otherwise a sqlite:/// or postgresql:// URL."""
    if url is None or url == "":
        return URL.create("sqlite", database=str(Path(DEFAULT_DB).absolute()))
    if "://" not in url:
        path = Path(url).expanduser().absolute()
        if path.suffix.lower() not in SQLITE_SUFFIXES and not path.is_file():
            raise StorageError(
                f"--db {url!r} is neither a database URL nor a SQLite file ({', '.join(SQLITE_SUFFIXES)}): "
                f"write sqlite:///{url} to create a SQLite file of that name, or postgresql://..."
            )
        return URL.create("sqlite", database=str(path))
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StorageError(f"invalid database URL {_redact_text(url)!r}: expected sqlite:///FILE or postgresql://...") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database {parsed.get_backend_name()!r} in {safe_url(parsed)}: use sqlite:///FILE or postgresql://..."
        )
    if parsed.get_backend_name() == "postgresql":
        parsed = _postgres_driver(parsed)
    return parsed


def _postgres_driver(url: URL) -> URL:
    """psycopg 3 for postgresql:// (named explicitly: SQLAlchemy 2.0 would pick psycopg2);
    postgresql+psycopg2:// only where psycopg2 happens to be installed."""
    driver = url.drivername.partition("+")[2]
    if driver in ("", "psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if driver == "psycopg2" and importlib.util.find_spec("psycopg2") is None:
        raise StorageError(
            f"postgresql+psycopg2:// needs psycopg2, which is not installed: telescope uses psycopg 3, "
            f"so write {safe_url(url)}"
        )
    return url


def _secrets(url: URL) -> list[str]:
    """The URL's password, whether after the user name or as a `?password=` parameter."""
    values = [url.password, url.query.get("password")]
    flat = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
    return [str(v) for v in flat if v]


def safe_url(url: URL) -> str:
    """The URL as text with any password masked (and without the driver name), for messages."""
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _redact_text(url: str) -> str:
    # Best effort for text that did not parse: drop anything between "//" and "@".
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        tail = "***@" + tail.rsplit("@", 1)[1]
    return head + sep + tail


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def error_line(error: BaseException, url: URL) -> str:
    """First line of a driver error, never showing the password."""
    original = getattr(error, "orig", None) or error
    line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    for secret in _secrets(url):
        line = line.replace(secret, "***")
    return line


class Database:
    """Read/write access to one telescope database (SQLite file or PostgreSQL).

    `create=True` creates the file and tables when missing; `create=False`
    (for commands that only read) refuses a missing database. Either way a
    database of another program or another schema version is refused with a
    StorageError that names the fix, before anything is written.
    """

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = resolve_url(url)
        self.display_url = safe_url(self.url)
        self._lock_file: BinaryIO | None = None
        path = _sqlite_path(self.url)
        if path is not None:
            if not path.exists() and not create:
                raise StorageError(
                    f"no telescope database at {path} (run `telescope sweep CONFIG` first, or pass --db)"
                )
            if not path.parent.is_dir():
                raise StorageError(f"cannot create database {path}: folder {path.parent} does not exist")
            if path.is_dir():
                raise StorageError(f"database path {path} is a folder, not a file")
            if path.exists():
                _check_sqlite_file(path)
        self.engine = self._make_engine()
        try:
            self._check_schema(create)
        except BaseException:
            self.engine.dispose()
            raise

    # -- opening -----------------------------------------------------------

    def _make_engine(self) -> Engine:
        kwargs: dict[str, Any] = {}
        if self.url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = create_engine(self.url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as e:
            raise StorageError(f"cannot use database {self.display_url}: {error_line(e, self.url)}") from None
        if self.url.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_on_connect)
        return engine

    def _check_schema(self, create: bool) -> None:
        tables, version = self._schema()
        foreign = VERSION_TABLE not in tables and tables & set(DATA_TABLES)
        if create and version is None and not foreign:
            # Two drivers starting on a fresh database would both create the tables (a duplicate
            # key in PostgreSQL's catalog, "table already exists" in SQLite): they take turns,
            # and the second finds the first one's tables.
            with self._exclusive(_CREATE_LOCK_KEY, wait=True):
                tables, version = self._schema()
                if VERSION_TABLE not in tables:
                    self._create_tables()
                    tables, version = self._schema()
        if VERSION_TABLE in tables:
            if version != SCHEMA_VERSION:
                raise StorageError(_incompatible_message(self.display_url, version))
            return
        if tables & set(DATA_TABLES):
            raise StorageError(
                f"{self.display_url} is not a telescope database (it has tables named "
                f"{', '.join(sorted(tables & set(DATA_TABLES)))} but no {VERSION_TABLE}): pass another --db"
            )
        raise StorageError(
            f"no telescope tables in {self.display_url} (run `telescope sweep CONFIG` first, or pass --db)"
        )

    def _schema(self) -> tuple[set[str], int | None]:
        """The database's table names and its telescope schema version (None if not stored)."""
        try:
            tables = set(inspect(self.engine).get_table_names())
            if VERSION_TABLE not in tables:
                return tables, None
            with Session(self.engine) as session:
                return tables, session.scalar(select(SchemaVersionModel.schema_version))
        except (DBAPIError, SQLAlchemyError) as e:
            raise StorageError(f"cannot open database {self.display_url}: {error_line(e, self.url)}") from None

    def _create_tables(self) -> None:
        try:
            Base.metadata.create_all(self.engine)
            with Session(self.engine) as session, session.begin():
                session.add(
                    SchemaVersionModel(
                        id=1, schema_version=SCHEMA_VERSION, library_version=_library_version(), created_at=_now()
                    )
                )
            if self.url.get_backend_name() == "sqlite":
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        except (DBAPIError, SQLAlchemyError) as e:
            raise StorageError(f"cannot create tables in {self.display_url}: {error_line(e, self.url)}") from None

    @contextmanager
    def lease(self, sweep: str) -> Iterator[None]:
        """Hold the right to run `sweep`: a second driver on the same sweep is refused with a
        StorageError instead of training every trial again. The lease goes with the process
        that holds it, however it ends."""
        key = 1 + (int.from_bytes(hashlib.sha256(f"telescope-sweep:{sweep}".encode()).digest()[:8], "big") >> 2)
        try:
            with self._exclusive(key, wait=False):
                yield
        except _Taken:
            raise StorageError(
                f"sweep {sweep!r} is being run by another telescope process on {self.display_url}; wait for it to end"
            ) from None

    @contextmanager
    def _exclusive(self, key: int, wait: bool) -> Iterator[None]:
        """A lock between processes, released when its holder ends however it ends: a
        PostgreSQL session advisory lock, or on SQLite a lock on byte `key` of `DB.lock`.
        Raises _Taken when another process holds it and not `wait`."""
        if self.url.get_backend_name() == "postgresql":
            with self.engine.connect() as conn:
                if wait:
                    conn.scalar(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                elif not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
                    raise _Taken
                conn.commit()
                try:
                    yield
                finally:
                    conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
            return
        path = _sqlite_path(self.url)
        if path is None:  # an in-memory database belongs to this process alone
            yield
            return
        # One descriptor for the Database's life: closing any descriptor of a file drops every
        # lock the process holds on it, nested ones (a sweep and its check) included.
        if self._lock_file is None:
            try:
                self._lock_file = open(path.with_name(path.name + ".lock"), "a+b")
            except OSError as e:
                raise StorageError(f"cannot lock {path}: {e.strerror}") from None
        try:
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, key)
        except OSError:
            raise _Taken from None
        try:
            yield
        finally:
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN, 1, key)

    def close(self) -> None:
        """Release every connection (on SQLite this also checkpoints the WAL into the file)."""
        self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    # -- sweeps ------------------------------------------------------------

    def create_sweep(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        parametrization: str,
        base_width: int,
        calibration_width: int,
        target_width: int | None = None,
        kind: str = "sweep",
        status: str = "running",
    ) -> SweepRow:
        """Add a sweep; StorageError if the name is taken (compare `config_hash` and decide)."""
        check_sweep_name(name)
        _check_choice("sweep kind", kind, SWEEP_KINDS)
        _check_choice("sweep status", status, SWEEP_STATUSES)
        now = _now()
        row = SweepModel(
            name=name,
            kind=kind,
            status=status,
            created_at=now,
            updated_at=now,
            config_json=_canonical_json(config),
            config_hash=config_hash(config),
            parametrization=parametrization,
            base_width=base_width,
            calibration_width=calibration_width,
            target_width=target_width,
        )
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:
            if self.get_sweep(name) is not None:
                raise StorageError(f"a sweep named {name!r} already exists in {self.display_url}") from None
            raise StorageError(  # the CHECK constraint of a database made before this kind existed
                f"{self.display_url} was created before sweeps of kind {kind!r} existed: use a new --db for them"
            ) from None
        return _sweep_row(row)

    def resume_or_create(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        kind: str,
        parametrization: str,
        base_width: int,
        calibration_width: int,
    ) -> None:
        """Create the run `name` of `kind` (a transfer check, a batch study), or reopen it to
        resume: same kind and same settings only, with trials cut off by a killed driver
        put back to pending."""
        existing = self.get_sweep(name)
        if existing is None:
            self.create_sweep(name, config, parametrization=parametrization, base_width=base_width,
                              calibration_width=calibration_width, kind=kind)  # fmt: skip
            return
        if existing.kind != kind:
            raise StorageError(f"{name!r} is a {existing.kind}, not a {kind}; choose another --name")
        if existing.config_hash != config_hash(config):
            raise StorageError(f"{kind} {name!r} was run with different settings; pick another --name (or drop --name)")
        self.reset_running(name)
        self.update_sweep(name, status="running")

    def get_sweep(self, name: str) -> SweepRow | None:
        with Session(self.engine) as session:
            row = session.scalar(select(SweepModel).where(SweepModel.name == name))
            return _sweep_row(row) if row is not None else None

    def require_sweep(self, name: str) -> SweepRow:
        """The sweep, or a StorageError naming it and the sweeps that do exist."""
        sweep = self.get_sweep(name)
        if sweep is None:
            raise StorageError(self._unknown_sweep_message(name))
        return sweep

    def list_sweeps(self) -> list[SweepRow]:
        """All sweeps, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(SweepModel).order_by(SweepModel.created_at, SweepModel.id))
            return [_sweep_row(r) for r in rows]

    def update_sweep(
        self, name: str, *, status: str | None = None, result: Mapping[str, Any] | None = None
    ) -> None:
        """Set a sweep's status and/or its final result (JSON-serialisable)."""
        values: dict[str, Any] = {"updated_at": _now()}
        if status is not None:
            values["status"] = _check_choice("sweep status", status, SWEEP_STATUSES)
        if result is not None:
            values["result_json"] = _canonical_json(result)
        with Session(self.engine) as session, session.begin():
            changed = session.execute(update(SweepModel).where(SweepModel.name == name).values(**values))
            if changed.rowcount == 0:
                raise StorageError(self._unknown_sweep_message(name))

    def delete_sweep(self, name: str) -> None:
        """Remove a sweep with its levels and trials (metrics files are the store's business)."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(TrialModel).where(TrialModel.sweep == name))
            session.execute(delete(LevelModel).where(LevelModel.sweep == name))
            if session.execute(delete(SweepModel).where(SweepModel.name == name)).rowcount == 0:
                raise StorageError(self._unknown_sweep_message(name))

    def sweep_detail(self, name: str) -> SweepDetail:
        """A sweep with all its levels and trials; StorageError naming the known sweeps if absent."""
        sweep = self.require_sweep(name)
        return SweepDetail(sweep=sweep, levels=self.levels(name), trials=self.trials(name))

    def _unknown_sweep_message(self, name: str) -> str:
        with Session(self.engine) as session:
            names = list(session.scalars(select(SweepModel.name).order_by(SweepModel.name)))
        known = f"known sweeps: {', '.join(names)}" if names else "the database has no sweeps yet"
        return f"no sweep named {name!r} in {self.display_url} ({known})"

    def sweep_summaries(self) -> list[SweepSummary]:
        """Every sweep with its level and trial progress, oldest first (three queries in all)."""
        with Session(self.engine) as session:
            sweeps = list(session.scalars(select(SweepModel).order_by(SweepModel.created_at, SweepModel.id)))
            trial_counts: dict[str, dict[str, int]] = {}
            for sweep, status, count in session.execute(
                select(TrialModel.sweep, TrialModel.status, func.count()).group_by(TrialModel.sweep, TrialModel.status)
            ):
                trial_counts.setdefault(sweep, {})[status] = count
            levels: dict[str, list[tuple[int, str, float | None]]] = {}
            for sweep, level, status, best_loss in session.execute(
                select(LevelModel.sweep, LevelModel.level, LevelModel.status, LevelModel.best_loss).order_by(
                    LevelModel.sweep, LevelModel.level
                )
            ):
                levels.setdefault(sweep, []).append((level, status, best_loss))
        summaries = []
        for s in sweeps:
            counts = trial_counts.get(s.name, {})
            sweep_levels = levels.get(s.name, [])
            finished_losses = [loss for _, status, loss in sweep_levels if status == "completed" and loss is not None]
            summaries.append(
                SweepSummary(
                    name=s.name,
                    kind=s.kind,
                    status=s.status,
                    levels_done=sum(1 for _, status, _ in sweep_levels if status == "completed"),
                    levels_planned=len(sweep_levels),
                    trials_done=sum(counts.get(st.value, 0) for st in FINISHED),
                    trials_total=sum(counts.values()),
                    best_loss=finished_losses[-1] if finished_losses else None,
                    created_at=s.created_at,
                )
            )
        return summaries

    # -- levels ------------------------------------------------------------

    def plan_level(self, sweep: str, level: int, *, width: int, grid: Sequence[Mapping[str, Any]]) -> None:
        """Store a level's plan (its width and grid points); re-planning a level replaces
        the plan and keeps its outcome and times."""
        grid_json = _canonical_json([dict(p) for p in grid])
        with Session(self.engine) as session, session.begin():
            self._require_sweep_in(session, sweep)
            existing = session.scalar(
                select(LevelModel).where(LevelModel.sweep == sweep, LevelModel.level == level)
            )
            if existing is None:
                session.add(
                    LevelModel(
                        sweep=sweep,
                        level=level,
                        width=width,
                        grid_json=grid_json,
                        n_points=len(grid),
                        status="planned",
                        created_at=_now(),
                    )
                )
            else:
                existing.width = width
                existing.grid_json = grid_json
                existing.n_points = len(grid)

    def start_level(self, sweep: str, level: int) -> None:
        """Mark a planned level running; the first start time is kept across resumes."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            row = self._require_level_in(session, sweep, level)
            row.status = "running"
            row.finished_at = None
            if row.started_at is None:
                row.started_at = now

    def finish_level(
        self,
        sweep: str,
        level: int,
        *,
        best: Mapping[str, float] | None,
        best_loss: float | None,
        warnings: Sequence[str] = (),
        status: str = "completed",
    ) -> None:
        """Store a level's outcome: its best point ({"lr": .., "weight_decay": .., ...}, keys
        from telescope.spec.SWEEPABLE), the best loss and the warnings raised."""
        _check_choice("level status", status, LEVEL_STATUSES)
        best = dict(best or {})
        unknown = set(best) - set(SWEEPABLE)
        if unknown:
            raise ValueError(f"best point has unknown hyperparameters {sorted(unknown)}; known: {SWEEPABLE}")
        with Session(self.engine) as session, session.begin():
            row = self._require_level_in(session, sweep, level)
            row.best_lr = _finite(best.get("lr"))
            row.best_weight_decay = _finite(best.get("weight_decay"))
            row.best_muon_lr_ratio = _finite(best.get("muon_lr_ratio"))
            row.best_loss = _finite(best_loss)
            row.warnings = "\n".join(warnings) if warnings else None
            row.status = status
            row.finished_at = _now() if status == "completed" else None

    def levels(self, sweep: str) -> list[LevelRow]:
        with Session(self.engine) as session:
            rows = session.scalars(select(LevelModel).where(LevelModel.sweep == sweep).order_by(LevelModel.level))
            return [_level_row(r) for r in rows]

    def get_level(self, sweep: str, level: int) -> LevelRow | None:
        with Session(self.engine) as session:
            row = session.scalar(select(LevelModel).where(LevelModel.sweep == sweep, LevelModel.level == level))
            return _level_row(row) if row is not None else None

    # -- trials ------------------------------------------------------------

    def add_trials(self, sweep: str, level: int, trials: Sequence[tuple[str, TrialSpec]]) -> int:
        """Add trials as pending; keys already in the sweep are left untouched, so calling
        this again on resume is a no-op. Returns how many were new."""
        keys = [check_trial_key(key) for key, _ in trials]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate trial keys in one batch for sweep {sweep!r}")
        now = _now()
        with Session(self.engine) as session, session.begin():
            self._require_sweep_in(session, sweep)
            existing = set(session.scalars(select(TrialModel.trial_key).where(TrialModel.sweep == sweep)))
            new_rows = [
                {
                    "sweep": sweep,
                    "level": level,
                    "trial_key": key,
                    "width": spec.width,
                    "lr": spec.lr,
                    "weight_decay": spec.weight_decay,
                    "muon_lr_ratio": spec.muon_lr_ratio,
                    "seed": spec.seed,
                    "parametrization": spec.parametrization,
                    "status": Status.PENDING.value,
                    "attempts": 0,
                    "spec_json": _canonical_json(spec.to_dict()),
                    "created_at": now,
                }
                for key, spec in trials
                if key not in existing
            ]
            if new_rows:
                session.execute(TrialModel.__table__.insert(), new_rows)
        return len(new_rows)

    def mark_running(self, sweep: str, keys: Sequence[str]) -> None:
        """Mark trials running (one more attempt each, start time now)."""
        if not keys:
            return
        now = _now()
        with Session(self.engine) as session, session.begin():
            self._require_keys_in(session, sweep, keys)
            session.execute(
                update(TrialModel)
                .where(TrialModel.sweep == sweep, TrialModel.trial_key.in_(list(keys)))
                .values(
                    status=Status.RUNNING.value,
                    attempts=TrialModel.attempts + 1,
                    started_at=now,
                    finished_at=None,
                    error=None,
                )
            )

    def record_results(self, sweep: str, results: Iterable[tuple[str, TrialResult]]) -> None:
        """Store finished trials' results in one transaction. Non-finite losses are stored
        as NULL; the result's status (diverged, failed...) says why."""
        results = list(results)
        if not results:
            return
        now = _now()
        table = TrialModel.__table__
        with Session(self.engine) as session, session.begin():
            ids = self._require_keys_in(session, sweep, [key for key, _ in results])
            params = [
                {
                    "status": Status(result.status).value,
                    "train_loss": _finite(result.train_loss),
                    "val_loss": _finite(result.val_loss),
                    "tokens": int(result.tokens),
                    "flops": _finite(result.flops),
                    "wall_time": _finite(result.wall_time),
                    "steps": int(result.steps),
                    "device": result.device or None,
                    "error": result.error,
                    "fingerprint": _canonical_json(result.fingerprint) if result.fingerprint else None,
                    "finished_at": now,
                }
                for key, result in results
            ]
            fields = list(params[0])
            params = [
                {"row_id": ids[key]} | {f"new_{name}": value for name, value in p.items()}
                for (key, _), p in zip(results, params)
            ]
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(
                    {name: bindparam(f"new_{name}") for name in fields}
                    # a result without a start (an executor that never called started) is one attempt
                    | {"attempts": case((table.c.attempts < 1, 1), else_=table.c.attempts)}
                )
            )
            session.execute(statement, params)

    def trials(
        self, sweep: str, level: int | None = None, status: Status | Iterable[Status] | None = None
    ) -> list[TrialRow]:
        """Trials of a sweep (optionally of one level and/or with given statuses), by level then
        insertion order."""
        query = select(TrialModel).where(TrialModel.sweep == sweep)
        if level is not None:
            query = query.where(TrialModel.level == level)
        if status is not None:
            wanted = [status] if isinstance(status, (Status, str)) else list(status)
            query = query.where(TrialModel.status.in_([Status(s).value for s in wanted]))
        with Session(self.engine) as session:
            rows = session.scalars(query.order_by(TrialModel.level, TrialModel.id))
            return [_trial_row(r) for r in rows]

    def trial_counts(self, sweep: str, level: int | None = None) -> dict[Status, int]:
        """Number of trials per status (every status present, zeros included)."""
        query = select(TrialModel.status, func.count()).where(TrialModel.sweep == sweep)
        if level is not None:
            query = query.where(TrialModel.level == level)
        counts = {s: 0 for s in Status}
        with Session(self.engine) as session:
            for status, count in session.execute(query.group_by(TrialModel.status)):
                counts[Status(status)] = count
        return counts

    def reset_running(self, sweep: str) -> int:
        """Put trials left `running` by a killed driver back to pending; returns how many."""
        with Session(self.engine) as session, session.begin():
            changed = session.execute(
                update(TrialModel)
                .where(TrialModel.sweep == sweep, TrialModel.status == Status.RUNNING.value)
                .values(status=Status.PENDING.value, started_at=None)
            )
            return changed.rowcount

    # -- helpers -----------------------------------------------------------

    def _require_sweep_in(self, session: Session, sweep: str) -> None:
        if session.scalar(select(SweepModel.id).where(SweepModel.name == sweep)) is None:
            raise StorageError(self._unknown_sweep_message(sweep))

    def _require_level_in(self, session: Session, sweep: str, level: int) -> LevelModel:
        row = session.scalar(select(LevelModel).where(LevelModel.sweep == sweep, LevelModel.level == level))
        if row is None:
            self._require_sweep_in(session, sweep)
            raise StorageError(f"sweep {sweep!r} has no level {level} (plan it first)")
        return row

    def _require_keys_in(self, session: Session, sweep: str, keys: Sequence[str]) -> dict[str, int]:
        wanted = set(keys)
        ids = {
            key: row_id
            for key, row_id in session.execute(
                select(TrialModel.trial_key, TrialModel.id).where(
                    TrialModel.sweep == sweep, TrialModel.trial_key.in_(wanted)
                )
            )
        }
        missing = wanted - ids.keys()
        if missing:
            self._require_sweep_in(session, sweep)
            raise StorageError(f"sweep {sweep!r} has no trials {sorted(missing)[:5]} (add them first)")
        return ids


def read_only_uri(path: Path) -> str:
    """The sqlite3 URI that opens `path` read-only."""
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"


def _check_sqlite_file(path: Path) -> None:
    """Refuse a damaged or foreign file before SQLAlchemy opens it read-write (which would
    checkpoint a WAL into the damaged file): read it read-only and let SQLite check its pages."""
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        problems = [str(e)]
    if problems != ["ok"]:
        raise StorageError(
            f"database {path} is damaged or not a SQLite file ({problems[0]}): restore it from a backup, "
            f"or salvage it with `sqlite3 {path} .recover`, or pass another --db"
        )


class _Taken(Exception):
    """Another process holds the lock."""


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _incompatible_message(url: str, version: int | None) -> str:
    if version is None or version < SCHEMA_VERSION:
        return (
            f"{url} has telescope schema version {version}, this telescope needs version {SCHEMA_VERSION}: "
            "there is no automatic upgrade; export what you need with `telescope export` or "
            "`telescope query`, then use a new database with --db"
        )
    return (
        f"{url} has telescope schema version {version}, newer than this telescope's {SCHEMA_VERSION}: "
        "upgrade telescope (pip install -U telescope) or use another database with --db"
    )


def _library_version() -> str:
    try:
        return metadata.version("telescope")
    except metadata.PackageNotFoundError:
        return "unknown"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, one fsync per checkpoint
    cursor.close()


def _sweep_row(r: SweepModel) -> SweepRow:
    return SweepRow(
        name=r.name,
        kind=r.kind,
        status=r.status,
        config=json.loads(r.config_json),
        config_hash=r.config_hash,
        parametrization=r.parametrization,
        base_width=r.base_width,
        calibration_width=r.calibration_width,
        target_width=r.target_width,
        result=json.loads(r.result_json) if r.result_json is not None else None,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _level_row(r: LevelModel) -> LevelRow:
    return LevelRow(
        sweep=r.sweep,
        level=r.level,
        width=r.width,
        grid=json.loads(r.grid_json),
        status=r.status,
        best_lr=r.best_lr,
        best_weight_decay=r.best_weight_decay,
        best_muon_lr_ratio=r.best_muon_lr_ratio,
        best_loss=r.best_loss,
        warnings=r.warnings.split("\n") if r.warnings else [],
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


def _trial_row(r: TrialModel) -> TrialRow:
    return TrialRow(
        sweep=r.sweep,
        level=r.level,
        key=r.trial_key,
        width=r.width,
        lr=r.lr,
        weight_decay=r.weight_decay,
        muon_lr_ratio=r.muon_lr_ratio,
        seed=r.seed,
        parametrization=r.parametrization,
        status=Status(r.status),
        train_loss=r.train_loss,
        val_loss=r.val_loss,
        tokens=r.tokens,
        flops=r.flops,
        wall_time=r.wall_time,
        steps=r.steps,
        device=r.device,
        error=r.error,
        attempts=r.attempts,
        fingerprint=json.loads(r.fingerprint) if r.fingerprint else None,
        spec=TrialSpec.from_dict(json.loads(r.spec_json)),
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )
