"""`telescope report`: one Markdown file that explains a finished sweep.

Sections: the plan, the per-level table, the chosen values and their drift
extrapolation, the per-group values at the target width, the warnings, the cost spent
against the plan, the figures (written into a folder next to the report and linked
with relative paths) and, when the sweep has them, the coord check of the user's model
and the transfer check.

Numbers read as a person reads them (telescope.readable): FLOPs as `158 TFLOP`, parameters
as `49.4k`, losses to 4 decimals, hyperparameters to 4 significant digits; `telescope
query` and `telescope export` give the full values.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from telescope import readable
from telescope.cost import Plan, plan
from telescope.errors import TelescopeError
from telescope.export import export_sweep
from telescope.files import atomic_write
from telescope.report.data import SweepData, grid_shape, load_sweep
from telescope.report.plots import FIGURES, check_output_dir, draw_figures, save_figures
from telescope.spec import Status
from telescope.storage.database import Database


@dataclass(frozen=True)
class Cost:
    """What a set of trials spent, from the trials table."""

    trials: int
    completed: int
    diverged: int
    failed: int
    flops: float
    wall_time: float  # summed over trials (trial-seconds, not the sweep's elapsed time)


@dataclass(frozen=True)
class LevelLine:
    level: int
    width: int
    grid: str
    best: dict[str, float]
    best_loss: float | None
    planned_flops: float | None
    cost: Cost


@dataclass(frozen=True)
class ReportData:
    sweep: SweepData
    plan: Plan
    levels: list[LevelLine]
    spent: Cost
    export: dict[str, Any]


def gather_report(db: Database, sweep: str) -> ReportData:
    """Everything the report prints, read from the database (raises for an unfinished sweep)."""
    data = load_sweep(db, sweep)
    the_plan = plan(data.config)
    planned = {lc.level: lc.flops_per_level for lc in the_plan.levels}
    rows = db.trials(sweep)
    levels = [
        LevelLine(
            level=lv.level,
            width=lv.width,
            grid=grid_shape(lv, data.swept),
            best=lv.best or {},
            best_loss=lv.best_loss,
            planned_flops=planned.get(lv.level),
            cost=_cost(r for r in rows if r.level == lv.level),
        )
        for lv in data.levels
    ]
    return ReportData(data, the_plan, levels, _cost(rows), export_sweep(db, sweep))


def _cost(rows: Iterable[Any]) -> Cost:
    rows = list(rows)
    statuses = [r.status for r in rows]
    return Cost(
        trials=len(rows),
        completed=statuses.count(Status.COMPLETED),
        diverged=statuses.count(Status.DIVERGED),
        failed=statuses.count(Status.FAILED),
        flops=sum(r.flops or 0.0 for r in rows),
        wall_time=sum(r.wall_time or 0.0 for r in rows),
    )


# --------------------------------------------------------------------------- rendering


def num(value: Any) -> str:
    """A cell: a float to 4 significant digits (losses, FLOPs and counts are formatted by
    their own rule before they get here), empty for missing."""
    if value is None:
        return ""
    if isinstance(value, float):
        return readable.value(value) if math.isfinite(value) else str(value)
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return num(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: ReportData, figures: dict[str, str], report_dir: Path | None = None) -> str:
    """The report text; `figures` maps figure names (see FIGURES) to paths relative to the report,
    which is written in `report_dir` (used to make the transfer check's plot path relative)."""
    parts = [
        _header(report),
        _plan_section(report),
        _levels_section(report),
        _answer_section(report),
        _warnings_section(report),
        _cost_section(report),
        _figures_section(figures),
    ]
    if report.sweep.result.model_check:
        parts.append(_model_check_section(report.sweep.result.model_check))
    check = report.sweep.result.transfer_check
    if check:
        parts.append(_transfer_check_section(check, report_dir))
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(r: ReportData) -> str:
    d = r.sweep
    w = d.config.widths
    return "\n".join(
        [
            f"# Sweep `{d.name}`",
            "",
            f"- parametrization: `{d.config.parametrization}`; objective: `{d.objective}`",
            f"- swept: {', '.join(f'{a.name} in [{num(a.lo)}, {num(a.hi)}] ({a.points} points)' for a in d.axes)}",
            f"- held fixed: {', '.join(f'{k}={num(v)}' for k, v in d.config.search.fixed) or 'nothing'}",
            f"- widths: base {w.base}, calibration {d.result.calibration_width}, target {d.target_width}",
        ]
    )


def _plan_section(r: ReportData) -> str:
    p = r.plan
    rows = [
        (
            lc.level,
            lc.width,
            lc.heads,
            readable.count(lc.params),
            lc.grid,
            lc.trials,
            readable.flops(lc.flops_per_trial),
            readable.flops(lc.flops_per_level),
        )
        for lc in p.levels
    ]
    return "\n".join(
        [
            "## Plan",
            "",
            f"{readable.count(p.tokens_per_trial)} tokens per trial. Grid shapes are upper bounds: a sub-grid clipped "
            "at the range edge has fewer points.",
            "",
            table(("level", "width", "heads", "params", "grid", "trials", "FLOPs per trial", "FLOPs per level"), rows),
            "",
            f"- planned: {p.sweep_trials} trials, {readable.flops(p.sweep_flops)}, {p.ratio:.3g} x one target run "
            f"({readable.flops(p.target_flops)} at width {p.target_width}, {readable.count(p.target_params)} params)",
            f"- brute force at the target width: {p.brute_force_trials} trials, {readable.flops(p.brute_force_flops)} "
            f"({p.saving:.3g} x the sweep)",
        ]
    )


def _levels_section(r: ReportData) -> str:
    names = r.sweep.swept
    rows = [
        (
            lv.level,
            lv.width,
            lv.grid,
            lv.cost.trials,
            *(lv.best.get(n) for n in names),
            readable.loss(lv.best_loss),
            lv.cost.diverged,
            lv.cost.failed,
        )
        for lv in r.levels
    ]
    columns = (
        "level",
        "width",
        "grid",
        "trials",
        *(f"best {n}" for n in names),
        f"best {r.sweep.objective}",
        "diverged",
        "failed",
    )
    return "\n".join(["## Levels", "", table(columns, rows)])


def _answer_section(r: ReportData) -> str:
    result = r.sweep.result
    advice = r.export["recommendation"]
    rows = []
    for name, value in result.best.items():
        d = result.drift_of(name)
        se = d.log_at_target_se if d else None
        rows.append(
            (
                name,
                value,
                d.x_inf if d else None,
                d.alpha if d else None,
                d.at_target if d else None,
                math.exp(se) if se is not None else None,
                advice["use"].get(name),
            )
        )
    for name, value in result.fixed.items():
        rows.append((f"{name} (fixed)", value, None, None, None, None, "fixed"))
    lines = [
        "## Chosen values",
        "",
        f"The chosen values are the best point at the calibration width {result.calibration_width} "
        f"({result.objective} {readable.loss(result.best_loss)}). "
        + (
            "The drift fit log x*(n) = log x_inf - alpha/n over the level optima extrapolates them to the target width."
            if result.drift
            else "One level only: no drift fit."
        ),
        "",
        table(
            (
                "hyperparameter",
                "chosen",
                "x_inf",
                "alpha",
                f"extrapolated to {r.export['target_width']}",
                "uncertainty (x/ factor)",
                "use",
            ),
            rows,
        ),
        "",
        "### Which values to use",
        "",
        f"{advice['reason']} Under a muP parametrization the optimal base values do not depend on width, so the "
        "best point at the widest proxy is the estimate least disturbed by the small widths; the drift fit takes "
        "over only where the optimum still moves with width by more than the fit's standard error, because its "
        f"extrapolation is only as good as that fit. `telescope export {r.sweep.name}` states the same in its "
        "`recommendation` field, and its parameter groups (below) use these values.",
    ]
    groups = r.export.get("groups") or []
    if groups:
        lines += [
            "",
            f"Per parameter group at width {r.export['target_width']} (`telescope export {r.sweep.name}`):",
            "",
            table(
                ("role", "params", "optimizer", "lr", "weight_decay", "init_std", "multiplier"),
                [
                    (
                        g["role"],
                        ", ".join(g["params"]),
                        g["optimizer"],
                        g["lr"],
                        g["weight_decay"],
                        g["init_std"] if g["init"] == "normal" else g["init"],
                        g["multiplier"],
                    )
                    for g in groups
                ],
            ),
        ]
    return "\n".join(lines)


def _warnings_section(r: ReportData) -> str:
    warnings = r.sweep.result.warnings
    body = "\n".join(f"- {w}" for w in warnings) if warnings else "None."
    return f"## Warnings\n\n{body}"


def _cost_section(r: ReportData) -> str:
    p, s = r.plan, r.spent
    rows = [
        (
            lv.level,
            lv.width,
            lv.cost.trials,
            lv.cost.diverged,
            lv.cost.failed,
            readable.flops(lv.cost.flops),
            readable.flops(lv.planned_flops),
            readable.seconds(lv.cost.wall_time),
        )
        for lv in r.levels
    ]
    rows.append(
        (
            "total",
            "",
            s.trials,
            s.diverged,
            s.failed,
            readable.flops(s.flops),
            readable.flops(p.sweep_flops),
            readable.seconds(s.wall_time),
        )
    )
    share = s.flops / p.sweep_flops if p.sweep_flops else None
    return "\n".join(
        [
            "## Cost",
            "",
            table(
                ("level", "width", "trials", "diverged", "failed", "FLOPs spent", "FLOPs planned", "trial time"), rows
            ),
            "",
            f"- spent {readable.flops(s.flops)} over {s.trials} trials ({s.completed} completed, {s.diverged} "
            "diverged, "
            f"{s.failed} failed): {num(share)} x the plan and {s.flops / p.target_flops:.3g} x one target run",
            f"- trial time {readable.seconds(s.wall_time)} in total (summed over trials; trials may have run in "
            "parallel).",
            "- Diverged trials stop early, so they spend less than planned.",
        ]
    )


def _figures_section(figures: dict[str, str]) -> str:
    titles = {f.name: f.title for f in FIGURES}
    lines = ["## Figures"]
    for name, path in figures.items():
        title = titles.get(name, name)
        lines += ["", f"### {title}", "", f"![{title}]({path})"]
    return "\n".join(lines)


def _model_check_section(stored: dict[str, Any]) -> str:
    from telescope.coord.verdict import UserModelCheck

    verdict = UserModelCheck.from_dict(stored)
    lines = ["## Coord check of your model", ""]
    if verdict.check != "coord":
        return "\n".join(lines + ['Not run (`[model] check = "none"`).'])
    lines += [
        f"- verdict: {'PASS' if verdict.passed else 'FAIL'}",
        f"- widths: {', '.join(map(str, verdict.widths))} ({verdict.steps} steps, {verdict.seeds} seed(s), lr "
        f"{verdict.lr:g})",
    ]
    worst = verdict.worst()
    if worst is not None:
        lines.append(
            f"- worst layer: `{worst.layer}` ({worst.roles or 'no parameters of its own'}): slope {worst.slope:+.2f}, "
            f"passes {worst.bounds()}"
        )
    lines.append(
        "- a layer passes when its slope of log mean |activation| against log width lies within its bounds: at most "
        f"+{verdict.threshold:g} (no growth), and down to {verdict.threshold:g} below the shrinking the table designs "
        "for it"
    )
    rows = verdict.rows()
    if rows:
        columns = list(rows[0])
        lines += ["", table(columns, [[r[c] for c in columns] for r in rows])]
    return "\n".join(lines)


def _transfer_check_section(check: Any, report_dir: Path | None) -> str:
    lines = ["## Transfer check", ""]
    if not isinstance(check, dict):
        return "\n".join(lines + [str(check)])
    rows = check.get("table")
    for key, value in check.items():
        if key not in ("table", "plot") and not isinstance(value, (dict, list)):
            lines.append(f"- {key}: {num(value)}")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["", table(columns, [[r.get(c) for c in columns] for r in rows])]
    elif isinstance(rows, str):
        lines += ["", rows]
    if check.get("plot"):
        plot = Path(check["plot"])
        if plot.is_absolute() and report_dir is not None:
            plot = Path(os.path.relpath(plot, report_dir))
        lines += ["", f"![transfer check]({plot.as_posix()})"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing


def check_report_path(path: Path) -> Path:
    """A Markdown file the report can be written to; TelescopeError (nothing written) if not."""
    path = Path(path)
    if path.suffix.lower() not in (".md", ".markdown"):
        raise TelescopeError(f"report file {path} must end in .md")
    if path.is_dir():
        raise TelescopeError(f"report file {path} is a folder; pass a file name ending in .md")
    if not path.parent.is_dir():
        raise TelescopeError(f"cannot write report {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TelescopeError(f"cannot write report {path}: permission denied")
    return path


def figures_dir(report_path: Path) -> Path:
    """Where the report's figures go: a folder next to it named after it."""
    return report_path.parent / f"{report_path.stem}-figures"


def write_report(db: Database, sweep: str, output: Path | None = None, svg: bool = False) -> Path:
    """`telescope report`: write the Markdown report of a finished sweep and its figures
    (default ./SWEEP-report.md and ./SWEEP-report-figures/). Returns the report's path."""
    output = check_report_path(Path(output) if output is not None else Path(f"{sweep}-report.md"))
    report = gather_report(db, sweep)
    folder = check_output_dir(figures_dir(output))
    written = save_figures(draw_figures(report.sweep), folder, svg)
    relative = {name: Path(os.path.relpath(paths[0], output.parent)).as_posix() for name, paths in written.items()}
    text = render_markdown(report, relative, output.parent)
    with atomic_write(output) as f:
        f.write(text.encode("utf-8"))
    return output
