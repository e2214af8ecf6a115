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

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Text, bindparam, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telescope.errors import StorageError
from telescope.numbers import finite_or_none
from telescope.spec import FINISHED, SWEEPABLE, Status, TrialResult, TrialSpec
from telescope.storage.connection import OpenDatabase, retried
from telescope.storage.metrics import check_sweep_name, check_trial_key
from telescope.storage.rows import (
    LevelRow,
    SweepDetail,
    SweepRow,
    SweepSummary,
    TrialRow,
    canonical_json,
    config_hash,
    level_row,
    sweep_row,
    trial_row,
)
from telescope.storage.schema import LEVEL_STATUSES, SWEEP_KINDS, SWEEP_STATUSES, LevelModel, SweepModel, TrialModel


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Database(OpenDatabase):
    """Read/write access to one telescope database (SQLite file or PostgreSQL): sweeps,
    levels and trials. Every method is one transaction (see OpenDatabase for opening)."""

    # -- sweeps ------------------------------------------------------------

    @retried
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
            config_json=canonical_json(config),
            config_hash=config_hash(config),
            parametrization=parametrization,
            base_width=base_width,
            calibration_width=calibration_width,
            target_width=target_width,
        )
        try:
            with self._writing(name) as session:
                session.add(row)
        except IntegrityError:
            if self.get_sweep(name) is not None:
                raise StorageError(f"a sweep named {name!r} already exists in {self.display_url}") from None
            raise StorageError(  # the CHECK constraint of a database made before this kind existed
                f"{self.display_url} was created before sweeps of kind {kind!r} existed: use a new --db for them"
            ) from None
        return sweep_row(row)

    @retried
    def get_sweep(self, name: str) -> SweepRow | None:
        with Session(self.engine) as session:
            row = session.scalar(select(SweepModel).where(SweepModel.name == name))
            return sweep_row(row) if row is not None else None

    @retried
    def require_sweep(self, name: str) -> SweepRow:
        """The sweep, or a StorageError naming it and the sweeps that do exist."""
        sweep = self.get_sweep(name)
        if sweep is None:
            raise StorageError(self._unknown_sweep_message(name))
        return sweep

    @retried
    def list_sweeps(self) -> list[SweepRow]:
        """All sweeps, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(SweepModel).order_by(SweepModel.created_at, SweepModel.id))
            return [sweep_row(r) for r in rows]

    @retried
    def update_sweep(self, name: str, *, status: str | None = None, result: Mapping[str, Any] | None = None) -> None:
        """Set a sweep's status and/or its final result (JSON-serialisable)."""
        values: dict[str, Any] = {"updated_at": _now()}
        if status is not None:
            values["status"] = _check_choice("sweep status", status, SWEEP_STATUSES)
        if result is not None:
            values["result_json"] = canonical_json(result)
        with self._writing(name) as session:
            changed = session.execute(update(SweepModel).where(SweepModel.name == name).values(**values))
            if changed.rowcount == 0:
                raise StorageError(self._unknown_sweep_message(name))

    @retried
    def delete_sweep(self, name: str) -> None:
        """Remove a sweep with its levels and trials (metrics files are the store's business)."""
        with self._writing(name) as session:
            session.execute(delete(TrialModel).where(TrialModel.sweep == name))
            session.execute(delete(LevelModel).where(LevelModel.sweep == name))
            if session.execute(delete(SweepModel).where(SweepModel.name == name)).rowcount == 0:
                raise StorageError(self._unknown_sweep_message(name))

    @retried
    def sweep_detail(self, name: str) -> SweepDetail:
        """A sweep with all its levels and trials; StorageError naming the known sweeps if absent."""
        sweep = self.require_sweep(name)
        return SweepDetail(sweep=sweep, levels=self.levels(name), trials=self.trials(name))

    def _unknown_sweep_message(self, name: str) -> str:
        with Session(self.engine) as session:
            names = list(session.scalars(select(SweepModel.name).order_by(SweepModel.name)))
        known = f"known sweeps: {', '.join(names)}" if names else "the database has no sweeps yet"
        return f"no sweep named {name!r} in {self.display_url} ({known})"

    @retried
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

    @retried
    def plan_level(self, sweep: str, level: int, *, width: int, grid: Sequence[Mapping[str, Any]]) -> None:
        """Store a level's plan (its width and grid points); re-planning a level replaces
        the plan and keeps its outcome and times."""
        grid_json = canonical_json([dict(p) for p in grid])
        with self._writing(sweep) as session:
            self._require_sweep_in(session, sweep)
            existing = session.scalar(select(LevelModel).where(LevelModel.sweep == sweep, LevelModel.level == level))
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

    @retried
    def start_level(self, sweep: str, level: int) -> None:
        """Mark a planned level running; the first start time is kept across resumes."""
        now = _now()
        with self._writing(sweep) as session:
            row = self._require_level_in(session, sweep, level)
            row.status = "running"
            row.finished_at = None
            if row.started_at is None:
                row.started_at = now

    @retried
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
        with self._writing(sweep) as session:
            row = self._require_level_in(session, sweep, level)
            row.best_lr = finite_or_none(best.get("lr"))
            row.best_weight_decay = finite_or_none(best.get("weight_decay"))
            row.best_muon_lr_ratio = finite_or_none(best.get("muon_lr_ratio"))
            row.best_loss = finite_or_none(best_loss)
            row.warnings = "\n".join(warnings) if warnings else None
            row.status = status
            row.finished_at = _now() if status == "completed" else None

    @retried
    def levels(self, sweep: str) -> list[LevelRow]:
        with Session(self.engine) as session:
            rows = session.scalars(select(LevelModel).where(LevelModel.sweep == sweep).order_by(LevelModel.level))
            return [level_row(r) for r in rows]

    @retried
    def get_level(self, sweep: str, level: int) -> LevelRow | None:
        with Session(self.engine) as session:
            row = session.scalar(select(LevelModel).where(LevelModel.sweep == sweep, LevelModel.level == level))
            return level_row(row) if row is not None else None

    # -- trials ------------------------------------------------------------

    @retried
    def add_trials(
        self,
        sweep: str,
        level: int,
        trials: Sequence[tuple[str, TrialSpec]],
        content_keys: Mapping[str, str] | None = None,
    ) -> int:
        """Add trials as pending, with their content keys (by trial key) where given; keys
        already in the sweep are left untouched, so calling this again on resume is a no-op.
        Returns how many were new."""
        keys = [check_trial_key(key) for key, _ in trials]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate trial keys in one batch for sweep {sweep!r}")
        now = _now()
        with self._writing(sweep) as session:
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
                    "spec_json": canonical_json(spec.to_dict()),
                    "content_key": (content_keys or {}).get(key),
                    "created_at": now,
                }
                for key, spec in trials
                if key not in existing
            ]
            if new_rows:
                session.execute(TrialModel.__table__.insert(), new_rows)
        return len(new_rows)

    @retried
    def mark_running(self, sweep: str, keys: Sequence[str]) -> None:
        """Mark trials running (one more attempt each, start time now)."""
        if not keys:
            return
        now = _now()
        with self._writing(sweep) as session:
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

    @retried
    def record_results(
        self, sweep: str, results: Iterable[tuple[str, TrialResult]], reused_from: Mapping[str, str] | None = None
    ) -> None:
        """Store finished trials' results in one transaction. Non-finite losses are stored
        as NULL; the result's status (diverged, failed...) says why. A trial in `reused_from`
        (key -> "SWEEP/TRIAL_KEY") took that trial's result untrained: 0 attempts."""
        reused_from = reused_from or {}
        results = list(results)
        if not results:
            return
        now = _now()
        table = TrialModel.__table__
        with self._writing(sweep) as session:
            ids = self._require_keys_in(session, sweep, [key for key, _ in results])
            params = [
                {
                    "status": Status(result.status).value,
                    "train_loss": finite_or_none(result.train_loss),
                    "val_loss": finite_or_none(result.val_loss),
                    "tokens": int(result.tokens),
                    "flops": finite_or_none(result.flops),
                    "wall_time": finite_or_none(result.wall_time),
                    "steps": int(result.steps),
                    "device": result.device or None,
                    "error": result.error,
                    "fingerprint": canonical_json(result.fingerprint) if result.fingerprint else None,
                    "finished_at": now,
                    "reused_from": reused_from.get(key),
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
                    | {
                        "attempts": case(
                            (bindparam("new_reused_from", type_=Text).is_not(None), 0),
                            (table.c.attempts < 1, 1),
                            else_=table.c.attempts,
                        )
                    }
                )
            )
            session.execute(statement, params)

    @retried
    def reusable(self, content_keys: Iterable[str]) -> dict[str, TrialRow]:
        """The first finished trial (completed or diverged, in any run) with each of these
        content keys that was trained rather than reused, by content key."""
        wanted = sorted(set(content_keys))
        found: dict[str, TrialRow] = {}
        with Session(self.engine) as session:
            for chunk in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
                rows = session.scalars(
                    select(TrialModel)
                    .where(
                        TrialModel.content_key.in_(chunk),
                        TrialModel.reused_from.is_(None),
                        TrialModel.status.in_([Status.COMPLETED.value, Status.DIVERGED.value]),
                    )
                    .order_by(TrialModel.id)
                )
                for r in rows:
                    found.setdefault(r.content_key, trial_row(r))
        return found

    @retried
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
            return [trial_row(r) for r in rows]

    @retried
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

    @retried
    def reset_running(self, sweep: str) -> int:
        """Put trials left `running` by a killed driver back to pending; returns how many."""
        with self._writing(sweep) as session:
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


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}; expected one of {', '.join(allowed)}")
    return value
