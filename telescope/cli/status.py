"""`telescope status [SWEEP]`: the sweeps in a database, or one sweep's levels and trials."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from telescope.cli.common import DbOption, FormatOption, OutputFormat, WideOption, console, print_rows, styled
from telescope.spec import FINISHED

if TYPE_CHECKING:
    from telescope.storage.rows import LevelRow, SweepSummary, TrialRow


def status(
    sweep: Annotated[str | None, typer.Argument(help="Show this sweep's levels and trials.")] = None,
    db: DbOption = None,
    fmt: FormatOption = OutputFormat.table,
    levels: Annotated[
        bool, typer.Option("--levels", help="Only the levels table (csv/json print the trials unless given).")
    ] = False,
    wide: WideOption = False,
) -> None:
    """Show the sweeps in the database, or one sweep's levels and trials.

    The table format prints the levels then the trials; csv and json print one
    table so the output parses: the trials, or the levels with --levels.
    """
    from telescope.storage.database import Database

    with Database(db, create=False) as database:
        if sweep is None:
            rows = [_summary(s) for s in database.sweep_summaries()]
            print_rows(rows, fmt, columns=SWEEP_COLUMNS, title="sweeps", drop=SWEEP_DROP, wide=wide)
            return
        detail = database.sweep_detail(sweep)
    show_levels = levels or fmt is OutputFormat.table
    show_trials = not levels
    if show_levels:
        counts = _per_level_counts(detail.trials)
        rows = [_level(level, counts) for level in detail.levels]
        print_rows(
            rows,
            fmt,
            columns=_columns(rows, LEVEL_COLUMNS, fmt, wide),
            title=f"{sweep}: levels",
            drop=LEVEL_DROP,
            wide=wide,
        )
        if fmt is OutputFormat.table:  # under the table, where a sentence has room
            for level in detail.levels:
                for warning in level.warnings:
                    console.print(styled("warning:", "yellow", f" {warning}"), highlight=False)
            _print_model_check((detail.sweep.result or {}).get("model_check"))
    if show_trials:
        rows = [_trial(t) for t in detail.trials]
        print_rows(
            rows,
            fmt,
            columns=_columns(rows, TRIAL_COLUMNS, fmt, wide),
            title=f"{sweep}: trials",
            drop=TRIAL_DROP,
            wide=wide,
        )


SWEEP_COLUMNS = ["name", "kind", "status", "levels", "trials", "best_loss", "created"]
LEVEL_COLUMNS = [
    "level",
    "width",
    "points",
    "status",
    "trials",
    "best_lr",
    "best_weight_decay",
    "best_muon_lr_ratio",
    "best_loss",
    "warnings",
]
TRIAL_COLUMNS = [
    "trial_key",
    "level",
    "width",
    "lr",
    "weight_decay",
    "muon_lr_ratio",
    "seed",
    "status",
    "train_loss",
    "val_loss",
    "steps",
    "wall_time",
    "attempts",
    "reused_from",
    "error",
]

# What a narrow terminal leaves out first (csv and json keep every column; --wide shows them):
# the trial key repeats the level, values and seed shown beside it.
SWEEP_DROP = ["created", "kind"]
LEVEL_DROP = ["best_muon_lr_ratio", "points"]
TRIAL_DROP = [
    "trial_key",
    "reused_from",
    "train_loss",
    "steps",
    "attempts",
    "muon_lr_ratio",
    "width",
    "wall_time",
    "error",
]


def _columns(rows: list[dict[str, Any]], columns: list[str], fmt: OutputFormat, wide: bool) -> list[str]:
    """Every column for csv/json; for a terminal table, those with a value in some row, and
    the warnings only with --wide (they are printed in full under the table)."""
    if fmt is not OutputFormat.table:
        return columns
    return [c for c in columns if (wide or c != "warnings") and (not rows or any(r[c] is not None for r in rows))]


def _time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _summary(s: SweepSummary) -> dict[str, Any]:
    return {
        "name": s.name,
        "kind": s.kind,
        "status": s.status,
        "levels": f"{s.levels_done}/{s.levels_planned}",
        "trials": f"{s.trials_done}/{s.trials_total}",
        "best_loss": s.best_loss,
        "created": _time(s.created_at),
    }


def _per_level_counts(trials: list[TrialRow]) -> dict[int, tuple[int, int]]:
    done = Counter(t.level for t in trials if t.status in FINISHED)
    total = Counter(t.level for t in trials)
    return {level: (done[level], total[level]) for level in total}


def _level(level: LevelRow, counts: dict[int, tuple[int, int]]) -> dict[str, Any]:
    done, total = counts.get(level.level, (0, 0))
    return {
        "level": level.level,
        "width": level.width,
        "points": len(level.grid),
        "status": level.status,
        "trials": f"{done}/{total}",
        "best_lr": level.best_lr,
        "best_weight_decay": level.best_weight_decay,
        "best_muon_lr_ratio": level.best_muon_lr_ratio,
        "best_loss": level.best_loss,
        "warnings": "; ".join(level.warnings) or None,
    }


def _trial(t: TrialRow) -> dict[str, Any]:
    return {
        "trial_key": t.key,
        "level": t.level,
        "width": t.width,
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "muon_lr_ratio": t.muon_lr_ratio,
        "seed": t.seed,
        "status": t.status.value,
        "train_loss": t.train_loss,
        "val_loss": t.val_loss,
        "steps": t.steps,
        "wall_time": t.wall_time,
        "attempts": t.attempts,
        "reused_from": t.reused_from,
        "error": t.error.strip().splitlines()[-1] if t.error else None,  # the exception line of a traceback
    }


def _print_model_check(stored: dict[str, Any] | None) -> None:
    """The pre-sweep coord check of the user's model: its verdict, widths and worst layer."""
    if not stored:
        return
    from rich.text import Text

    from telescope.coord.verdict import UserModelCheck

    verdict = UserModelCheck.from_dict(stored)
    label = "PASS" if verdict.passed else "FAIL"
    head, found, rest = verdict.summary().partition(f": {label} ")
    if not found:  # not run
        console.print(Text(verdict.summary()), highlight=False, soft_wrap=True)
        return
    color = "green" if verdict.passed else "red"
    console.print(Text.assemble(head + ": ", (label, f"bold {color}"), " " + rest), highlight=False, soft_wrap=True)
