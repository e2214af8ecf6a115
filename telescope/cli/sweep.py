"""`telescope sweep CONFIG`: run or resume a telescoping sweep and print the answer."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from telescope.cli.common import DbOption, StoreOption, console, err_console


class ExecutorKind(str, enum.Enum):
    ray = "ray"
    local = "local"


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML), e.g. examples/tiny-cpu.toml.")],
    name: Annotated[str | None, typer.Option("--name", help="Sweep name. Default: the config's name, else its file name.")] = None,
    db: DbOption = None,
    store: StoreOption = None,
    executor: Annotated[ExecutorKind | None, typer.Option("--executor", help="Override the config: ray or local.")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Connect to this Ray cluster instead of starting one.")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new sweep even if one of this name exists.")] = False,
    check_transfer: Annotated[bool, typer.Option("--check-transfer", help="Run `telescope transfer-check` at the sweep's first widths before level 0.")] = False,
    check_threshold: Annotated[float, typer.Option("--check-threshold", help="The check's largest drift per doubling, in grid steps.")] = 1.0,
    force: Annotated[bool, typer.Option("--force", help="Go on with the sweep when the transfer check fails.")] = False,
) -> None:
    """Run the telescoping search; running it again resumes where it stopped."""
    from telescope.config import load_config
    from telescope.export import export_sweep
    from telescope.storage.database import Database
    from telescope.storage.metrics import MetricsStore, check_sweep_name
    from telescope.sweep import check_device_here, run_sweep
    from telescope.transfer_check.run import TransferCheckFailed
    from telescope.trials import make_executor

    cfg = load_config(config)
    settings = cfg.executor
    if executor is not None:
        settings = dataclasses.replace(settings, kind=executor.value)
    if ray_address is not None:
        settings = dataclasses.replace(settings, kind="ray", ray_address=ray_address)
    sweep_name = check_sweep_name(name or cfg.name or config.stem)
    check_device_here(cfg.train.device, settings)
    metrics = MetricsStore(store)
    check = None
    if check_transfer:
        from telescope.transfer_check.run import check_settings, settings_from_config

        check = settings_from_config(cfg, threshold=check_threshold)
        check_settings(check)
    runner = make_executor(settings)  # connects to Ray now: a bad address fails before anything is written
    try:
        with Database(db) as database:
            result = run_sweep(
                cfg, database, metrics, sweep_name, executor=runner, new=new, console=err_console, check=check, force=force
            )
            payload = export_sweep(database, result["sweep"])
    except TransferCheckFailed as failed:
        from telescope.cli.transfer_check import print_result

        print_result(failed.check)
        err_console.print("the sweep did not start: the transfer check failed (rerun with --force to sweep anyway)")
        raise typer.Exit(1) from None
    finally:
        runner.close()
    print_answer(payload)


def print_answer(payload: dict[str, Any]) -> None:
    """The chosen values, their extrapolation, the warnings and the per-group values."""
    prov = payload["provenance"]
    table = Table(title=f"sweep {payload['sweep']}: answer (from width {prov['calibration_width']})")
    for column in ("hyperparameter", "chosen", f"extrapolated to {payload['target_width']}"):
        table.add_column(column)
    for key, value in payload["base"].items():
        extrapolated = payload["extrapolated"].get(key)
        table.add_row(key, f"{value:.4g}", f"{extrapolated:.4g}" if extrapolated else "-")
    console.print(table)
    levels = prov["levels"]
    console.print(
        f"best {prov['objective']} {prov['best_loss']:.4f} | "
        f"{sum(lv['trials'] for lv in levels)} trials over {len(levels)} levels, "
        f"{sum(lv['diverged'] for lv in levels)} diverged, {sum(lv['failed'] for lv in levels)} failed"
    )
    for warning in prov["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    groups = Table(title=f"parameter groups at width {payload['target_width']} ({payload['parametrization']})")
    for column in ("role", "params", "optimizer", "lr", "weight_decay", "init_std", "multiplier"):
        groups.add_column(column)
    for g in payload["groups"]:
        groups.add_row(
            g["role"], ", ".join(g["params"]), g["optimizer"], f"{g['lr']:.4g}", f"{g['weight_decay']:.4g}",
            f"{g['init_std']:.4g}", f"{g['multiplier']:.4g}",
        )  # fmt: skip
    console.print(groups)
