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

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from telescope.errors import TelescopeError
from telescope.numbers import finite_or_none
from telescope.runs import keys
from telescope.runs.line import LineStep, run_line
from telescope.runs.stored import RunRecord, StoredRun, open_run
from telescope.spec import Status, TrialSpec, objective_value
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.rows import TrialRow
from telescope.transfer_check.analysis import (
    SeededOptimum,
    Verdict,
    locate_seeds,
    lr_line,
    next_extension,
    verdict_from_optima,
)
from telescope.transfer_check.settings import (
    KIND,
    CheckSettings,
    check_settings,
    trial_spec,
)
from telescope.trials.base import Executor


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
            return [(_key(settings, size, lr, s), trial_spec(settings, size, lr, s)) for lr in lrs for s in seeds]

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
            trial_spec(settings, size, settings.center, settings.seed_base).width,
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


def dumps(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str)


__all__ = ["CheckResult", "TransferCheckFailed", "dumps", "run_transfer_check", "trial_key"]
