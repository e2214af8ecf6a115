"""`telescope transfer-check` end to end: LR lines per width through the sweep's executor and
database, located optima, extensions, and the verdict (telescope.transfer_check.analysis).
With `depths` the axis is depth instead: one width, one line per depth, the first depth the
base depth of the depth rule (docs/design.md §8).

A check is stored as a sweep of kind "transfer-check". Level i holds the first line of
size i (width or depth); the j-th extension of size i is level i + j * len(sizes). Trial
keys name the width (and depth), lr and seed, so running the same check again runs only
the trials that have not finished, and every level's extension is a pure function of the
stored results before it.

Defaults (measured on the default corpus, see README "Transfer check"): widths 64 and 256,
5 points in steps of sqrt(2) around the table's default LR, 2 seeds, 200 steps of 16 x 64
bytes, depth 2, head dim 32, weight decay 0. Comparing the two widths two doublings apart
averages out the seed noise that dominates one doubling at this size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from telescope.errors import ConfigError, TelescopeError
from telescope.numbers import finite_or_none
from telescope.runs import keys
from telescope.runs.line import LineStep, run_line
from telescope.runs.stored import RunRecord, StoredRun, open_run
from telescope.spec import ModelShape, Status, TrainSettings, TrialSpec, objective_value
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.rows import TrialRow
from telescope.transfer_check.analysis import (
    DEFAULT_EXTENSION_POINTS,
    DEFAULT_MAX_EXTENSIONS,
    DEFAULT_THRESHOLD_STEPS,
    SQRT2,
    SeededOptimum,
    Verdict,
    locate_seeds,
    lr_line,
    next_extension,
    verdict_from_optima,
)
from telescope.trials.base import Executor

KIND = "transfer-check"
DEFAULT_WIDTHS = (64, 256)
DEFAULT_DEPTH_WIDTH = 64  # a check across depths without a config runs at this width
DEFAULT_CHECK_POINTS = 5
DEFAULT_SEEDS = 2
DEFAULT_CHECK_TRAIN = TrainSettings(steps=200, batch_size=16, warmup_steps=20)
DEFAULT_CHECK_SHAPE = ModelShape(depth=2, head_dim=32, seq_len=64)


@dataclass(frozen=True)
class CheckSettings:
    """Everything a transfer check runs. `lr_center=None` means the table's default LR;
    `base_width=None` means the first width (m = 1 there)."""

    parametrization: str = "paper"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    base_width: int | None = None
    lr_center: float | None = None
    points: int = DEFAULT_CHECK_POINTS
    seeds: int = DEFAULT_SEEDS
    seed_base: int = 0
    weight_decay: float = 0.0
    muon_lr_ratio: float = 1.0
    step: float = SQRT2
    threshold: float = DEFAULT_THRESHOLD_STEPS
    loss_tolerance: float = 0.0
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    extension_points: int = DEFAULT_EXTENSION_POINTS
    objective: Literal["val_loss", "train_loss"] = "val_loss"
    model: ModelShape = DEFAULT_CHECK_SHAPE
    train: TrainSettings = DEFAULT_CHECK_TRAIN
    model_factory: str | None = None
    model_rules: tuple[tuple[str, str], ...] = ()  # role rules for the user's model, before FOREIGN_RULES
    hf_config: str | None = None  # or a Hugging Face config.json (absolute) the user's model is built from
    hf_config_hash: str | None = None
    # Check across these depths (increasing) at the one width widths[0]; the first is the base depth.
    depths: tuple[int, ...] = ()

    @property
    def user_model(self) -> bool:
        return self.model_factory is not None or self.hf_config is not None

    @property
    def axis(self) -> Literal["width", "depth"]:
        return "depth" if self.depths else "width"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The values along the checked axis: the depths, or the widths."""
        return self.depths or self.widths

    @property
    def center(self) -> float:
        if self.lr_center is not None:
            return self.lr_center
        from telescope.parametrization import get_table

        return get_table(self.parametrization).default_lr

    @property
    def base(self) -> int:
        return self.base_width if self.base_width is not None else self.widths[0]

    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed_base, self.seed_base + self.seeds))

    def trial_settings(self) -> dict[str, Any]:
        """What decides the trials (stored with the check; the verdict's knobs are not in it,
        so changing --threshold reuses the stored trials)."""
        d = dataclasses.asdict(self)
        for key in ("threshold", "loss_tolerance", "max_extensions", "extension_points", "objective"):
            d.pop(key)
        d["widths"] = list(self.widths)
        d["base_width"], d["lr_center"] = self.base, self.center
        if self.hf_config is None:  # a check of the proxy or a factory keeps the name it had
            del d["hf_config"], d["hf_config_hash"]
        if self.depths:
            d["depths"] = list(self.depths)
        else:  # a width check's settings (and so its default name) as before depth checks existed
            del d["depths"]
        if not self.model.depth_alpha:
            del d["model"]["depth_alpha"]
        return d

    def default_name(self) -> str:
        """`transfer-check-TABLE-HASH`: the same settings resume the same check."""
        return keys.default_name(KIND, self.parametrization, self.trial_settings())


def check_settings(settings: CheckSettings) -> None:
    """TelescopeError (one line) for settings that cannot run; nothing is written before this."""
    from telescope.parametrization import get_table
    from telescope.proxy.model import check_shape
    from telescope.training.train import check_spec

    get_table(settings.parametrization)
    ws = settings.widths
    if settings.depths:
        ds = settings.depths
        if len(ds) < 2 or any(b <= a for a, b in zip(ds, ds[1:])) or ds[0] <= 0:
            raise ConfigError(f"--depths needs at least two positive, strictly increasing depths, got {list(ds)}")
        if len(ws) != 1 or ws[0] <= 0:
            raise ConfigError(f"a check across depths runs at one positive width, got {list(ws)}")
        if settings.user_model:
            raise ConfigError("--depths checks the built-in proxy; your model decides its own depth")
    elif len(ws) < 2 or any(b <= a for a, b in zip(ws, ws[1:])) or ws[0] <= 0:
        raise ConfigError(f"--widths needs at least two positive, strictly increasing widths, got {list(ws)}")
    if settings.points < 3:
        raise ConfigError(f"--points must be >= 3 to locate an optimum, got {settings.points}")
    if settings.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {settings.seeds}")
    if not (settings.center > 0 and math.isfinite(settings.center)):
        raise ConfigError(f"--lr must be a positive number, got {settings.center}")
    if not settings.threshold > 0:
        raise ConfigError(f"--threshold must be > 0 grid steps, got {settings.threshold}")
    if settings.weight_decay < 0 or settings.muon_lr_ratio <= 0:
        raise ConfigError("weight decay must be >= 0 and muon_lr_ratio > 0")
    spec = _spec(settings, settings.sizes[0], settings.center, settings.seed_base)
    check_spec(spec)
    if not settings.user_model:
        for size in settings.sizes:
            check_shape(_spec(settings, size, settings.center, settings.seed_base).model, spec.width)
    else:
        check_foreign_model(
            settings.model_factory,
            settings.parametrization,
            ws[0],
            settings.base,
            settings.model,
            settings.model_rules,
            settings.hf_config,
            settings.hf_config_hash,
        )


def check_foreign_model(
    factory: str | None,
    parametrization: str,
    width: int,
    base_width: int,
    shape: ModelShape,
    rules: tuple[tuple[str, str], ...] = (),
    hf_config: str | None = None,
    hf_config_hash: str | None = None,
) -> None:
    """Build the user's model (a factory, or a Hugging Face config) at `width`, classify its
    parameters and run one forward pass: a bad factory, an unmatched parameter, no
    unembedding or outputs that are not logits over the vocabulary are each one
    TelescopeError line."""
    import torch

    from telescope.models import model_maker
    from telescope.models.foreign import build_user_model
    from telescope.models.packing import logits_of
    from telescope.roles import with_defaults

    maker, name = model_maker(factory, hf_config, hf_config_hash)
    model = build_user_model(
        maker, parametrization, width, base_width, 0, with_defaults(rules), name, shape.depth_alpha
    )
    label = f"factory {factory!r}" if factory is not None else name
    idx = torch.zeros(1, shape.seq_len, dtype=torch.long)
    try:
        with torch.no_grad():
            out = logits_of(model(idx))
    except Exception as e:  # noqa: BLE001 - the user's forward failed; say how, in one line
        raise TelescopeError(
            f"model {label}: forward on token ids (1, {shape.seq_len}) failed: {type(e).__name__}: {e}".replace(
                "\n", " "
            )
        ) from None
    if (
        not isinstance(out, torch.Tensor)
        or out.ndim != 3
        or out.shape[:2] != idx.shape
        or out.shape[2] < shape.vocab_size
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TelescopeError(
            f"model {label} must map token ids (batch, seq) to logits (batch, seq, >= {shape.vocab_size}), got {got}"
        )


def _spec(settings: CheckSettings, size: int, lr: float, seed: int) -> TrialSpec:
    """The trial at one size of the axis: a width, or (across depths) a depth at the one width."""
    width, depth = (settings.widths[0], size) if settings.depths else (size, None)
    return TrialSpec(
        width=width,
        base_width=settings.base,
        base_depth=settings.depths[0] if depth is not None else None,
        lr=lr,
        weight_decay=settings.weight_decay,
        muon_lr_ratio=settings.muon_lr_ratio,
        parametrization=settings.parametrization,
        seed=seed,
        model=settings.model if depth is None else dataclasses.replace(settings.model, depth=depth),
        train=settings.train,
        model_factory=settings.model_factory,
        model_rules=settings.model_rules,
        hf_config=settings.hf_config,
        hf_config_hash=settings.hf_config_hash,
    )


def trial_key(width: int, lr: float, seed: int, depth: int | None = None) -> str:
    return keys.trial_key(f"w{width}" if depth is None else f"d{depth}-w{width}", {"lr": lr}, seed)


def _key(settings: CheckSettings, size: int, lr: float, seed: int) -> str:
    if settings.depths:
        return trial_key(settings.widths[0], lr, seed, size)
    return trial_key(size, lr, seed)


class TransferCheckFailed(Exception):
    """`sweep --check-transfer` stops on a FAIL (not a TelescopeError: exit 1, not 2)."""

    def __init__(self, check: "CheckResult"):
        super().__init__(f"transfer check {check.name} failed: " + "; ".join(check.verdict.reasons))
        self.check = check


@dataclass
class CheckResult:
    name: str
    settings: CheckSettings
    verdict: Verdict
    located: list[SeededOptimum]
    curves: dict[int, list[tuple[float, float]]]  # width (or depth) -> (lr, seed-mean loss; inf when diverged)
    trials: int
    ran: int
    failed: int = 0
    plot: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def to_dict(self) -> dict[str, Any]:
        """The whole check as one JSON-able object (`--json`, and the stored result)."""
        axis = self.settings.axis
        across = {"axis": axis}
        if self.settings.depths:
            across |= {"width": self.settings.widths[0], "depth_alpha": self.settings.model.depth_alpha}
        return {
            "check": self.name,
            "parametrization": self.settings.parametrization,
            "verdict": self.verdict.label,
            "passed": self.passed,
            "threshold_steps": self.verdict.threshold_steps,
            "reasons": list(self.verdict.reasons),
            **across,
            f"{axis}s": _json_rows(self.verdict.width_rows()),
            "doublings": _json_rows(self.verdict.doubling_rows()),
            "curves": {str(w): [[lr, finite_or_none(loss)] for lr, loss in c] for w, c in self.curves.items()},
            "lr_center": self.settings.center,
            "step": self.settings.step,
            "seeds": list(self.settings.seed_list()),
            "trials": self.trials,
            "ran": self.ran,
            "failed": self.failed,
            "plot": self.plot,
        }

    def report_section(self) -> dict[str, Any]:
        """The `result["transfer_check"]` of a sweep: scalars, one table and the plot
        (telescope.report.markdown renders it)."""
        drift = {d.width_hi: d for d in self.verdict.doublings}
        rows = []
        for r in self.verdict.widths:
            d = drift.get(r.width)
            rows.append(
                {
                    "width": r.width,
                    "optimum_lr": r.optimum_lr,
                    "optimum_steps": round(r.optimum_steps, 3),
                    "best_loss": finite_or_none(r.best_loss),
                    "edge": r.edge or "",
                    "seed_std_steps": _round(r.seed_std_steps),
                    "drift_per_doubling": _round(d.drift_per_doubling) if d else None,
                    "drift_std": _round(d.drift_std) if d else None,
                }
            )
        worst = max(self.verdict.doublings, key=lambda d: abs(d.drift_per_doubling))
        return {
            "check": self.name,
            "verdict": self.verdict.label,
            "parametrization": self.settings.parametrization,
            "widths": ", ".join(map(str, self.settings.widths)),
            "threshold_steps": self.verdict.threshold_steps,
            "largest_drift_per_doubling": round(worst.drift_per_doubling, 3),
            "reasons": "; ".join(self.verdict.reasons),
            "table": rows,
            "plot": self.plot,
        }


def _round(x: float | None, digits: int = 3) -> float | None:
    x = finite_or_none(x)
    return round(x, digits) if x is not None else None


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: finite_or_none(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def run_transfer_check(
    settings: CheckSettings,
    db: Database,
    store: MetricsStore,
    executor: Executor,
    name: str | None = None,
    on_trial: Callable[[str, Any], None] | None = None,
    plot: str | Path | None = None,
    new: bool = False,
    reuse: bool = True,
) -> CheckResult:
    """Run (or resume) a transfer check, draw its plot to `plot` (a .png) if given, and
    store its result; see the module docstring. `new`: a check of this name exists, start
    another under the next free name."""
    from telescope.transfer_check.plot import check_plot_path, plot_transfer_check

    check_settings(settings)
    if plot is not None:
        check_plot_path(plot)
    record = RunRecord(
        KIND,
        name or settings.default_name(),
        settings.trial_settings(),
        settings.parametrization,
        settings.base,
        settings.widths[-1],
    )
    with open_run(db, store, executor, record, (settings.model, settings.train), new=new, reuse=reuse) as run:
        result = _run(settings, run, on_trial or (lambda key, result: None))
        if plot is not None:
            result.plot = str(plot_transfer_check(result, plot).resolve())
        run.finish(result.to_dict())
    return result


def _run(settings: CheckSettings, run: StoredRun, on_trial: Callable[[str, Any], None]) -> CheckResult:
    seeds = settings.seed_list()
    n = len(settings.sizes)
    located: list[SeededOptimum] = []
    curves: dict[int, list[tuple[float, float]]] = {}
    total = failed = 0
    for i, size in enumerate(settings.sizes):

        def trials_of(lrs: Sequence[float], size: int = size) -> list[tuple[str, TrialSpec]]:
            return [(_key(settings, size, lr, s), _spec(settings, size, lr, s)) for lr in lrs for s in seeds]

        def assess(lrs: list[float], rows: dict[str, TrialRow], extensions: int, size: int = size) -> LineStep:
            losses, n_failed = _loss_table(settings, rows, size, lrs, seeds)
            optimum = locate_seeds(lrs, losses, settings.step)
            more = next_extension(
                lrs, optimum.mean, extensions, max_extensions=settings.max_extensions, n=settings.extension_points
            )
            return LineStep(
                optimum.mean.grid_lr, finite_or_none(optimum.mean.grid_loss), more, (optimum, losses, n_failed)
            )

        lrs, step = run_line(
            run,
            _spec(settings, size, settings.center, settings.seed_base).width,
            lr_line(settings.center, settings.points, settings.step),
            lambda j, i=i: i + n * j,
            trials_of,
            assess,
            on_trial,
        )
        optimum, losses, n_failed = step.outcome
        located.append(optimum)
        curves[size] = list(zip(lrs, [sum(col) / len(col) for col in zip(*losses)]))
        total += len(lrs) * len(seeds)
        failed += n_failed
    verdict = verdict_from_optima(
        settings.sizes,
        located,
        settings.threshold,
        loss_tolerance=settings.loss_tolerance,
        step=settings.step,
        axis=settings.axis,
    )
    return CheckResult(run.name, settings, verdict, located, curves, total, run.ran, failed)


def _loss_table(
    settings: CheckSettings, rows: dict[str, TrialRow], size: int, lrs: Sequence[float], seeds: Sequence[int]
) -> tuple[list[list[float]], int]:
    """losses[k][j] for seed k at lrs[j] (+inf when diverged or failed), and the failed count.
    Every trial of a size failing is an error: the check would have nothing to measure."""
    table, failed, errors = [], 0, []
    for s in seeds:
        line = []
        for lr in lrs:
            row = rows[_key(settings, size, lr, s)]
            if row.status is Status.FAILED:
                failed += 1
                errors.append(row.error or "unknown error")
            value = finite_or_none(objective_value(row, settings.objective))
            line.append(value if value is not None else math.inf)
        table.append(line)
    if failed == len(lrs) * len(seeds):
        first = (errors[0] or "").strip().splitlines()
        raise TelescopeError(f"every trial at {settings.axis} {size} failed: {first[-1] if first else 'unknown error'}")
    return table, failed


def settings_from_config(
    config: Any,
    widths: Sequence[int] | None = None,
    **overrides: Any,
) -> CheckSettings:
    """Check settings from a sweep config: its model (the built-in proxy's shape, or the
    user's model its `[model]` names: factory or hf_config, with its rules), train settings,
    parametrization and base width; the LR line centred on the middle of its lr range (or
    its fixed lr), weight decay and muon_lr_ratio at their fixed values or the middle of
    their ranges. Default widths: the sweep's first widths, `first_widths(config)` (across
    depths, its base width)."""
    values = config.search.centre()
    source = config.source
    if widths is None:
        widths = (config.widths.base,) if overrides.get("depths") else first_widths(config)
    return CheckSettings(
        parametrization=config.parametrization,
        widths=tuple(widths),
        base_width=config.widths.base,
        lr_center=values.get("lr"),
        weight_decay=values.get("weight_decay", 0.0),
        muon_lr_ratio=values.get("muon_lr_ratio", 1.0),
        objective=config.objective,
        model=config.model,
        train=config.train,
        seed_base=config.seeds.base,
        model_factory=source.factory,
        model_rules=source.rules,
        hf_config=source.hf_path,
        hf_config_hash=source.hf_config_hash,
        **overrides,
    )


def first_widths(config: Any) -> tuple[int, ...]:
    """The sweep's first widths for a check: its base width and the width two doublings up
    (one when the calibration width is only twice the base)."""
    base, calibration = config.widths.base, config.widths.calibration
    if calibration <= base:
        raise ConfigError(
            f"a transfer check needs two widths but the config's base and calibration widths are both {base}; pass "
            "--widths"
        )
    return (base, min(4 * base, calibration))


def dumps(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str)


__all__ = [
    "CheckResult",
    "CheckSettings",
    "TransferCheckFailed",
    "check_settings",
    "first_widths",
    "run_transfer_check",
    "settings_from_config",
    "trial_key",
]
