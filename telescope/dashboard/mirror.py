"""Copy telescope's stored runs into an Optuna storage, adding only what is new.

Each Optuna study keeps its name (`telescope.dashboard.studies`); each Optuna trial
carries its telescope trial key as a system attribute, so mirroring again finds what it
wrote before: a trial already there and finished is left alone, one that was waiting or
running and has moved on since is updated in place (never added twice), and a new one is
created whole, with its loss curve, in one transaction.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from telescope.dashboard.studies import StudyPlan, TrialPlan, run_studies
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore

KEY_ATTR = "telescope:trial_key"
SWEEP_ATTR = "telescope:sweep"
MAX_CURVE_POINTS = 200


@dataclass
class MirrorCounts:
    """What one mirror pass wrote."""

    studies: int = 0  # studies created
    trials: int = 0  # trials created
    updated: int = 0  # trials moved on (waiting -> running -> finished)

    @property
    def changed(self) -> bool:
        return bool(self.studies or self.trials or self.updated)


class Mirror:
    """Mirrors the named runs (default: every stored run) into `storage`, pass after pass.

    It remembers what each study holds (trial ids and states by telescope key), so a pass
    that finds nothing new reads the telescope database and the study list, not every
    Optuna trial with its curve; a study it has not seen, or one recreated meanwhile, is
    read from the storage once.
    """

    def __init__(
        self, db: Database, store: MetricsStore, storage: BaseStorage, sweeps: Sequence[str] | None = None
    ) -> None:
        self.db, self.store, self.storage = db, store, storage
        self.sweeps = list(dict.fromkeys(sweeps)) if sweeps else None
        self._studies: dict[str, tuple[int, dict[str, tuple[int, TrialState]]]] = {}

    def run(self) -> MirrorCounts:
        """One pass: create what is new, move on what has changed; returns what it wrote."""
        names = self.sweeps or [s.name for s in self.db.list_sweeps()]
        existing = {s.study_name: s for s in self.storage.get_all_studies()}
        counts = MirrorCounts()
        curves = _Curves(self.store)
        for name in names:
            sweep = self.db.get_sweep(name)
            if sweep is None:  # deleted since it was named
                continue
            for plan in run_studies(self.db, sweep):
                self._sync(existing.get(plan.name), plan, curves, counts)
        return counts

    def _sync(self, study: FrozenStudy | None, plan: StudyPlan, curves: "_Curves", counts: MirrorCounts) -> None:
        storage = self.storage
        if study is None:
            study_id = self._create_study(plan)
            counts.studies += 1
            user_attrs: dict = {}
        else:
            study_id, user_attrs = study._study_id, study.user_attrs
        for key, value in plan.user_attrs.items():
            if user_attrs.get(key) != value:
                storage.set_study_user_attr(study_id, key, value)
        known = self._trials(plan.name, study_id)
        for trial in plan.trials:
            before = known.get(trial.key)
            if before is None:
                trial_id = storage.create_new_trial(study_id, template_trial=_frozen(trial, plan.sweep, curves))
                known[trial.key] = (trial_id, trial.state)
                counts.trials += 1
            elif not before[1].is_finished() and before[1] != trial.state:
                try:
                    _move_on(storage, before[0], trial, plan.sweep, curves)
                    counts.updated += 1
                except UpdateFinishedTrialError:  # finished by hand in the dashboard meanwhile
                    pass
                known[trial.key] = (before[0], trial.state)

    def _create_study(self, plan: StudyPlan) -> int:
        study_id = self.storage.create_new_study([StudyDirection.MINIMIZE], plan.name)
        self.storage.set_study_system_attr(study_id, SWEEP_ATTR, plan.sweep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.load_study(study_name=plan.name, storage=self.storage).set_metric_names([plan.objective])
        self._studies[plan.name] = (study_id, {})
        return study_id

    def _trials(self, name: str, study_id: int) -> dict[str, tuple[int, TrialState]]:
        """The study's trials by telescope key: remembered, or read once from the storage."""
        cached = self._studies.get(name)
        if cached is None or cached[0] != study_id:
            trials = self.storage.get_all_trials(study_id, deepcopy=False)
            cached = (study_id, {t.system_attrs.get(KEY_ATTR): (t._trial_id, t.state) for t in trials})
            self._studies[name] = cached
        return cached[1]


def mirror(
    db: Database, store: MetricsStore, storage: BaseStorage, sweeps: Sequence[str] | None = None
) -> MirrorCounts:
    """One pass of a new Mirror: what is in `storage` already is read from it."""
    return Mirror(db, store, storage, sweeps).run()


def _frozen(trial: TrialPlan, sweep: str, curves: "_Curves") -> FrozenTrial:
    finished = trial.state.is_finished()
    started = _local(trial.started) or (_local(trial.finished) if finished else None)
    if trial.state is TrialState.RUNNING and started is None:
        started = datetime.now()
    return FrozenTrial(
        number=0,  # the storage numbers it
        state=trial.state,
        value=trial.value,
        values=None,
        datetime_start=started,
        datetime_complete=_local(trial.finished) if finished else None,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs={KEY_ATTR: trial.key},
        intermediate_values=curves.of(sweep, trial) if finished else {},
        trial_id=0,
    )


def _move_on(storage: BaseStorage, trial_id: int, trial: TrialPlan, sweep: str, curves: "_Curves") -> None:
    """Bring a waiting or running Optuna trial up to its telescope trial's new state."""
    if trial.state.is_finished():
        for step, loss in curves.of(sweep, trial).items():
            storage.set_trial_intermediate_value(trial_id, step, loss)
    for key, value in trial.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    # waiting -> running, running -> finished, or running -> waiting (a killed driver's trial)
    storage.set_trial_state_values(trial_id, trial.state, [trial.value] if trial.value is not None else None)


def _local(moment: datetime | None) -> datetime | None:
    """Optuna keeps naive local times; telescope keeps aware UTC ones."""
    if moment is None:
        return None
    return moment.replace(tzinfo=moment.tzinfo or timezone.utc).astimezone().replace(tzinfo=None)


class _Curves:
    """Step losses from the Parquet metrics, read once per level and pass."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store
        self._levels: dict[tuple[str, int], dict[str, dict[int, float]]] = {}

    def of(self, sweep: str, trial: TrialPlan) -> dict[int, float]:
        """The trial's train loss by step, at most MAX_CURVE_POINTS of them, the last kept."""
        level = self._levels.get((sweep, trial.level))
        if level is None:
            frame = self.store.read(sweep, trial.level)
            level = {
                str(key): _subsample(rows["step"].tolist(), rows["train_loss"].tolist())
                for key, rows in frame.groupby("trial_key", sort=False)
            }
            self._levels[(sweep, trial.level)] = level
        return level.get(trial.key, {})


def _subsample(steps: list[int], losses: list[float]) -> dict[int, float]:
    points = [(int(s), float(v)) for s, v in zip(steps, losses) if math.isfinite(v)]
    if len(points) > MAX_CURVE_POINTS:
        last = len(points) - 1
        picks = sorted({round(i * last / (MAX_CURVE_POINTS - 1)) for i in range(MAX_CURVE_POINTS)})
        points = [points[i] for i in picks]
    return dict(points)
