"""`telescope batch-study` end to end: per optimizer and batch size, an LR line of proxy trials
through the sweep's executor and database, the best LR's loss curves, and the study's numbers
(telescope.batch_study.analysis).

A study is stored as a sweep of kind "batch-study": level `o * len(batch_sizes) + b` holds the
LR line of optimizer o (0: the config's Muon table, 1: `adamw`) at batch size b, and its
extensions (a best LR on the line's edge adds the next point out, twice at most) follow at
levels shifted by 2 * len(batch_sizes). Every batch size trains on the same number of tokens
(the config's steps x batch_size x seq_len), so T_L compares like with like. Trial keys name
optimizer, batch size, LR and seed: running the same study again runs only what is missing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from telescope.batch_study.analysis import (
    DEFAULT_SMOOTHING,
    ParetoPoint,
    Spread,
    pareto_frontier,
    ratio_over_seeds,
    smoothed,
    token_optimal_batch,
    tokens_to_loss,
)
from telescope.config import SweepConfig
from telescope.errors import ConfigError, TelescopeError
from telescope.numbers import finite_or_none
from telescope.parametrization import get_table
from telescope.runs.keys import default_name, trial_key
from telescope.runs.line import LineStep, run_line
from telescope.runs.stored import RunRecord, StoredRun, open_run
from telescope.search import extend_line
from telescope.spec import ModelShape, Status, TrainSettings, TrialSpec
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.rows import TrialRow
from telescope.trials.base import Executor

KIND = "batch-study"
ADAMW = "adamw"
DEFAULT_LR_POINTS = 3
DEFAULT_LR_STEP = 2.0
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class StudySettings:
    """Everything a study runs; `from_config` fills it from a sweep config."""

    model: ModelShape
    train: TrainSettings  # its steps x batch_size x seq_len is every run's token budget
    width: int  # the proxy trained: the config's calibration width
    base_width: int
    muon_table: str  # the config's parametrization; AdamW runs the `adamw` table
    batch_sizes: tuple[int, ...]
    weight_decay: float
    seeds: int = 1
    lr_points: int = DEFAULT_LR_POINTS
    lr_step: float = DEFAULT_LR_STEP
    losses: tuple[float, ...] = ()  # target losses L; empty: chosen from the runs
    per_device: int | None = None  # sequences per device for the Pareto frontier (default: smallest B)
    smoothing: int = DEFAULT_SMOOTHING

    @property
    def optimizers(self) -> tuple[str, str]:
        return (self.muon_table, ADAMW)

    @property
    def tokens(self) -> int:
        return self.train.steps * self.train.batch_size * self.model.seq_len

    def steps(self, batch_size: int) -> int:
        return max(1, round(self.tokens / (batch_size * self.model.seq_len)))

    def center_lr(self, table: str, batch_size: int) -> float:
        """The table's default LR, scaled by sqrt(B / the config's batch size)."""
        return get_table(table).default_lr * math.sqrt(batch_size / self.train.batch_size)

    def trial_settings(self) -> dict[str, Any]:
        """What the trials depend on (the stored config; `losses` only change the analysis)."""
        d = dataclasses.asdict(self)
        d.pop("losses"), d.pop("per_device"), d.pop("smoothing")
        return d

    def default_name(self) -> str:
        """`batch-study-TABLE-HASH`: the same settings resume the same study."""
        return default_name(KIND, self.muon_table, self.trial_settings())


def settings_from_config(
    config: SweepConfig, batch_sizes: Sequence[int] | None = None, **overrides: Any
) -> StudySettings:
    """The study of a sweep config: its model, train section, calibration width and Muon
    table, at batch sizes `batch_sizes` (default: the config's batch size x 1/4 .. 4)."""
    b = config.train.batch_size
    sizes = tuple(batch_sizes) if batch_sizes else tuple(s for s in (b // 4, b // 2, b, 2 * b, 4 * b) if s >= 1)
    weight_decay = config.search.centre()["weight_decay"]
    settings = StudySettings(
        model=config.model,
        train=config.train,
        width=config.widths.calibration,
        base_width=config.widths.base,
        muon_table=config.parametrization,
        batch_sizes=tuple(sorted(set(sizes))),
        weight_decay=weight_decay,
        seeds=config.seeds.per_point,
    )
    return dataclasses.replace(settings, **overrides)


def check_study(settings: StudySettings) -> None:
    """ConfigError (one line) for settings that cannot run; nothing is written before this."""
    if get_table(settings.muon_table).hidden.optimizer != "muon":
        raise ConfigError(
            f"parametrization {settings.muon_table!r} trains hidden matrices with AdamW: "
            "the study compares a Muon table (paper, muon) with adamw"
        )
    if len(settings.batch_sizes) < 2 or min(settings.batch_sizes) < 1:
        raise ConfigError(f"--batch-sizes needs at least two sizes >= 1, got {list(settings.batch_sizes)}")
    if settings.lr_points < 2 or not settings.lr_step > 1:
        raise ConfigError("the LR line needs at least 2 points and a step above 1")
    if settings.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {settings.seeds}")
    if any(not (math.isfinite(L) and L > 0) for L in settings.losses):
        raise ConfigError(f"--losses must be positive numbers, got {list(settings.losses)}")
    if settings.per_device is not None and settings.per_device < 1:
        raise ConfigError(f"--per-device must be >= 1, got {settings.per_device}")
    for b in settings.batch_sizes:
        if settings.steps(b) < 2 * settings.smoothing:
            raise ConfigError(
                f"batch size {b} leaves {settings.steps(b)} steps of the {settings.tokens} tokens: "
                f"too few to follow the loss (raise train.steps or drop that batch size)"
            )


@dataclass
class Run:
    """The best LR of one optimizer at one batch size, and its loss curve per seed."""

    optimizer: str
    batch_size: int
    lr: float
    final_loss: float  # mean over seeds of the smoothed final training loss
    curves: list[tuple[list[float], list[float]]]  # per seed: tokens, train loss


@dataclass
class StudyResult:
    name: str
    settings: StudySettings
    losses: tuple[float, ...]
    runs: dict[str, dict[int, Run]]  # optimizer -> batch size -> run
    tokens_to_loss: dict[float, dict[str, dict[int, Spread]]] = field(default_factory=dict)
    ratios: dict[float, dict[int, Spread]] = field(default_factory=dict)
    token_optimal: dict[float, dict[str, int | None]] = field(default_factory=dict)
    pareto: dict[float, dict[str, list[ParetoPoint]]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def rows(self, loss: float) -> list[dict[str, Any]]:
        """One row per batch size at target `loss`: T_L per optimizer, R_L, the LRs used."""
        muon, adamw = self.settings.optimizers
        return [
            {
                "batch_size": b,
                "tokens_per_step": b * self.settings.model.seq_len,
                f"T_{muon}": finite_or_none(self.tokens_to_loss[loss][muon][b].mean),
                f"T_{adamw}": finite_or_none(self.tokens_to_loss[loss][adamw][b].mean),
                "R": finite_or_none(self.ratios[loss][b].mean),
                "R_std": finite_or_none(self.ratios[loss][b].std),
                f"lr_{muon}": self.runs[muon][b].lr,
                f"lr_{adamw}": self.runs[adamw][b].lr,
            }
            for b in self.settings.batch_sizes
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings.trial_settings() | {"losses": list(self.losses)},
            "targets": [
                {
                    "loss": L,
                    "rows": self.rows(L),
                    "token_optimal_batch": self.token_optimal[L],
                    "pareto": {opt: [dataclasses.asdict(p) for p in points] for opt, points in self.pareto[L].items()},
                }
                for L in self.losses
            ],
            "plots": self.plots,
        }


def run_batch_study(
    settings: StudySettings,
    db: Database,
    store: MetricsStore,
    executor: Executor,
    name: str | None = None,
    on_trial: Callable[[str, Any], None] | None = None,
    new: bool = False,
    reuse: bool = True,
) -> StudyResult:
    """Run (or resume) a study and return its numbers; the result is stored with the sweep.
    `new`: a study of this name exists, start another under the next free name."""
    check_study(settings)
    record = RunRecord(
        KIND,
        name or settings.default_name(),
        settings.trial_settings(),
        settings.muon_table,
        settings.base_width,
        settings.width,
    )
    with open_run(db, store, executor, record, (settings.model, settings.train), new=new, reuse=reuse) as run:
        runs = {
            opt: {
                b: _best_run(settings, run, o, i, b, on_trial or (lambda key, result: None))
                for i, b in enumerate(settings.batch_sizes)
            }
            for o, opt in enumerate(settings.optimizers)
        }
        result = analyse(run.name, settings, runs)
        run.finish(result.to_dict())
    return result


def _key(optimizer: str, batch_size: int, lr: float, seed: int) -> str:
    return trial_key(f"{optimizer}-B{batch_size}", {"lr": lr}, seed)


def _spec(settings: StudySettings, table: str, batch_size: int, lr: float, seed: int) -> TrialSpec:
    steps = settings.steps(batch_size)
    warmup = round(steps * settings.train.warmup_steps / settings.train.steps)
    return TrialSpec(
        width=settings.width,
        base_width=settings.base_width,
        lr=lr,
        weight_decay=settings.weight_decay,
        parametrization=table,
        seed=seed,
        model=settings.model,
        train=dataclasses.replace(settings.train, steps=steps, batch_size=batch_size, warmup_steps=warmup),
    )


def _best_run(
    settings: StudySettings, run: StoredRun, o: int, i: int, batch_size: int, on_trial: Callable[[str, Any], None]
) -> Run:
    """The LR line of optimizer `o` at `batch_size`, extended outward (one point, twice at
    most) while its best LR is on an edge; returns the best LR's run."""
    table, seeds = settings.optimizers[o], range(settings.seeds)
    center = settings.center_lr(table, batch_size)
    half = (settings.lr_points - 1) / 2
    lrs = [center * settings.lr_step ** (k - half) for k in range(settings.lr_points)]

    def trials_of(new: Sequence[float]) -> list[tuple[str, TrialSpec]]:
        return [
            (_key(table, batch_size, lr, s), _spec(settings, table, batch_size, lr, s)) for lr in new for s in seeds
        ]

    def assess(line: list[float], rows: dict[str, TrialRow], extensions: int) -> LineStep[float]:
        finals = {lr: _final_loss(rows, table, batch_size, lr, seeds) for lr in line}
        best = min(line, key=lambda lr: finals[lr])
        if not math.isfinite(finals[best]):
            raise TelescopeError(f"every {table} run at batch size {batch_size} diverged or failed")
        edge = "down" if best == line[0] else "up" if best == line[-1] else None
        more = extend_line(line, edge, 1, settings.lr_step) if edge and extensions < MAX_EXTENSIONS else ()
        return LineStep(best, finite_or_none(finals[best]), more, best)

    first = o * len(settings.batch_sizes) + i
    stride = 2 * len(settings.batch_sizes)
    _, step = run_line(run, settings.width, lrs, lambda j: first + stride * j, trials_of, assess, on_trial)
    best = step.outcome
    rows = {row.key: row for row in run.rows()}
    curves = []
    for s in seeds:
        frame = run.metrics(rows[_key(table, batch_size, best, s)])
        curves.append((frame["tokens"].astype(float).tolist(), frame["train_loss"].astype(float).tolist()))
    final = _mean([smoothed(loss, settings.smoothing)[-1] for _, loss in curves])
    return Run(table, batch_size, best, final, curves)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if all(math.isfinite(v) for v in values) else math.inf


def _final_loss(rows: dict[str, TrialRow], table: str, batch_size: int, lr: float, seeds: range) -> float:
    losses = []
    for s in seeds:
        row = rows[_key(table, batch_size, lr, s)]
        ok = row.status is Status.COMPLETED and row.train_loss is not None
        losses.append(row.train_loss if ok else math.inf)
    return _mean(losses)


def default_losses(runs: dict[str, dict[int, Run]]) -> tuple[float, ...]:
    """Targets every run reaches and a harder one: the worst final loss, and the median."""
    finals = sorted(
        run.final_loss for per_b in runs.values() for run in per_b.values() if math.isfinite(run.final_loss)
    )
    if not finals:
        return ()
    worst, median = finals[-1], finals[len(finals) // 2]
    # Rounded up to 4 decimals, so that the worst run still reaches its own final loss.
    return tuple(sorted({math.ceil(worst * 1e4) / 1e4, math.ceil(median * 1e4) / 1e4}, reverse=True))


def analyse(name: str, settings: StudySettings, runs: dict[str, dict[int, Run]]) -> StudyResult:
    """The study's numbers from its runs (pure)."""
    losses = settings.losses or default_losses(runs)
    result = StudyResult(name, settings, losses, runs)
    muon, adamw = settings.optimizers
    per_device = settings.per_device or min(settings.batch_sizes)
    for L in losses:
        t = {
            opt: {
                b: [tokens_to_loss(tok, loss, L, settings.smoothing) for tok, loss in run.curves]
                for b, run in per_b.items()
            }
            for opt, per_b in runs.items()
        }
        result.tokens_to_loss[L] = {opt: {b: Spread.of(v) for b, v in per_b.items()} for opt, per_b in t.items()}
        result.ratios[L] = {b: ratio_over_seeds(t[adamw][b], t[muon][b]) for b in settings.batch_sizes}
        means = {opt: {b: s.mean for b, s in per_b.items()} for opt, per_b in result.tokens_to_loss[L].items()}
        result.token_optimal[L] = {opt: token_optimal_batch(m) for opt, m in means.items()}
        result.pareto[L] = {opt: pareto_frontier(m, per_device, settings.model.seq_len) for opt, m in means.items()}
    return result
