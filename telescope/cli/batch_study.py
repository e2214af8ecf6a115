"""`telescope batch-study CONFIG`: Muon against AdamW across batch sizes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import (
    DEFAULT_RETRY_SECONDS,
    DbOption,
    DbRetryOption,
    ExecutorKind,
    NewOption,
    NoReuseOption,
    StoreOption,
    console,
    print_rows,
    run_stored,
    trial_printer,
)
from telescope.errors import TelescopeError


def _numbers(text: str | None, kind: type, option: str) -> tuple | None:
    if not text:
        return None
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise TelescopeError(f"{option} must be comma-separated numbers, got {text!r}") from None


def batch_study(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML): model, train, calibration width, Muon table.")],
    batch_sizes: Annotated[
        str | None,
        typer.Option("--batch-sizes", help="Comma-separated sequences per step. Default: the config's x 1/4 .. 4."),
    ] = None,
    losses: Annotated[
        str | None, typer.Option("--losses", help="Comma-separated target training losses L. Default: from the runs.")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="Seeds per point. Default: the config's seeds.per_point.")
    ] = None,
    per_device: Annotated[
        int | None,
        typer.Option(
            "--per-device", help="Sequences per device for the Pareto frontier. Default: the smallest batch size."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Study name. Default: batch-study-TABLE-HASH.")] = None,
    new: NewOption = False,
    no_reuse: NoReuseOption = False,
    db: DbOption = None,
    db_retry_seconds: DbRetryOption = DEFAULT_RETRY_SECONDS,
    store: StoreOption = None,
    executor: Annotated[
        ExecutorKind | None, typer.Option("--executor", help="ray or local. Default: the config's.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write tokens-to-loss.png, ratio.png and pareto.png here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """For each optimizer (the config's Muon table and adamw) and batch size: an LR line at the
    calibration width on the same tokens, then T_L(B), R_L(B) = T_adamw / T_muon, B_tok and
    the compute-time Pareto frontier (arXiv 2505.02222 §2)."""
    from telescope.batch_study.run import check_study, run_batch_study, settings_from_config
    from telescope.config import load_config
    from telescope.files import check_writable_folder

    cfg = load_config(config)
    overrides = {
        k: v
        for k, v in (("losses", _numbers(losses, float, "--losses")), ("seeds", seeds), ("per_device", per_device))
        if v is not None
    }
    settings = settings_from_config(cfg, _numbers(batch_sizes, int, "--batch-sizes"), **overrides)
    check_study(settings)
    if plot is not None:
        check_writable_folder(plot)
    executor_settings = cfg.executor if executor is None else dataclasses.replace(cfg.executor, kind=executor.value)
    result = run_stored(
        name,
        (settings.model, settings.train, executor_settings),
        ([settings.width], "the calibration width"),
        store,
        db,
        db_retry_seconds,
        lambda database, metrics, runner: run_batch_study(
            settings, database, metrics, runner, name, trial_printer("train_loss"), new, not no_reuse
        ),
    )
    if plot is not None:
        from telescope.batch_study.plot import plot_study

        result.plots = [str(p) for p in plot_study(result, plot)]
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    muon, adamw = settings.optimizers
    for L in result.losses:
        print_rows(
            [_readable(row, muon, adamw) for row in result.rows(L)],
            title=f"target loss L = {L:g}: tokens to reach it ({settings.tokens:,} per run, width {settings.width})",
        )
        best = result.token_optimal[L]
        console.print(f"token-optimal batch size: {muon} {best[muon]}, {adamw} {best[adamw]}", highlight=False)
    for path in result.plots:
        console.print(f"plot: {path}", highlight=False)


def _readable(row: dict, muon: str, adamw: str) -> dict:
    """A row for a person: token counts whole, R with its spread, LRs short; '-' = never reached."""
    tokens = lambda t: "-" if t is None else f"{t:,.0f}"  # noqa: E731
    if row["R"] is not None:
        r = f"{row['R']:.2f}" + (f" ± {row['R_std']:.2f}" if row["R_std"] is not None else "")
    else:  # only one of them (or neither) reached L
        r = "inf" if row[f"T_{muon}"] is not None and row[f"T_{adamw}"] is None else "-"
    return {
        "B": row["batch_size"],
        f"T {muon}": tokens(row[f"T_{muon}"]),
        f"T {adamw}": tokens(row[f"T_{adamw}"]),
        f"R = T {adamw} / T {muon}": r,
        f"lr {muon}": f"{row[f'lr_{muon}']:.3g}",
        f"lr {adamw}": f"{row[f'lr_{adamw}']:.3g}",
    }
