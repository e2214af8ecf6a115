"""`telescope sweep CONFIG`: run or resume a telescoping sweep and print the answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import (
    DEFAULT_RETRY_SECONDS,
    DbOption,
    DbRetryOption,
    ExecutorKind,
    ModelOption,
    NewOption,
    NoReuseOption,
    RulesOption,
    StoreOption,
    err_console,
    open_database,
    print_rows,
)
from telescope.cli.dashboard import DEFAULT_PORT, PortOption, bind_for_sweep, sweep_dashboard
from telescope.cli.export import print_export
from telescope.cli.plan import print_plan


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML), e.g. examples/tiny-cpu.toml.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Sweep name. Default: the config's name, else its file name.")
    ] = None,
    db: DbOption = None,
    db_retry_seconds: DbRetryOption = DEFAULT_RETRY_SECONDS,
    store: StoreOption = None,
    executor: Annotated[
        ExecutorKind | None, typer.Option("--executor", help="Override the config: ray or local.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Connect to this Ray cluster instead of starting one.")
    ] = None,
    new: NewOption = False,
    check_transfer: Annotated[
        bool,
        typer.Option(
            "--check-transfer", help="Run `telescope transfer-check` at the sweep's first widths before level 0."
        ),
    ] = False,
    check_threshold: Annotated[
        float, typer.Option("--check-threshold", help="The check's largest drift per doubling, in grid steps.")
    ] = 1.0,
    force: Annotated[bool, typer.Option("--force", help="Go on with the sweep when the transfer check fails.")] = False,
    no_reuse: NoReuseOption = False,
    dashboard: Annotated[
        bool, typer.Option("--dashboard", help="Serve `telescope dashboard` on 127.0.0.1 for the sweep's life.")
    ] = False,
    port: PortOption = DEFAULT_PORT,
    model: ModelOption = None,
    rules: RulesOption = None,
) -> None:
    """Run the telescoping search; running it again resumes where it stopped."""
    from telescope.cli.checks import check_widths_fit
    from telescope.cli.common import load_sweep_config
    from telescope.cost import plan as make_plan
    from telescope.export import export_sweep
    from telescope.runs.executor import make_executor
    from telescope.runs.preflight import check_inputs
    from telescope.storage.metrics import MetricsStore, check_sweep_name
    from telescope.sweep import run_sweep

    cfg = load_sweep_config(config, model, rules)
    settings = cfg.executor
    if executor is not None:
        settings = dataclasses.replace(settings, kind=executor.value)
    if ray_address is not None:
        settings = dataclasses.replace(settings, kind="ray", ray_address=ray_address)
    sweep_name = check_sweep_name(name or cfg.name or config.stem)
    check_inputs(cfg.model, cfg.train, settings)  # before Ray starts and the plan prints
    if cfg.user_model:
        from telescope.models.depth import check_user_blocks

        check_user_blocks(cfg.source, cfg.widths.base, cfg.model.depth_alpha)
    checks: dict = {}
    if cfg.user_model:
        checks["model_check"] = _check_user_model(cfg)
    elif settings.ray_address is None:
        check_widths_fit(cfg.model, [cfg.widths.calibration], cfg.train.device, "widths.calibration")
    metrics = MetricsStore(store)
    metrics.check_writable()
    check = None
    if check_transfer:
        from telescope.transfer_check.settings import check_settings, settings_from_config

        check = settings_from_config(cfg, threshold=check_threshold)
        check_settings(check)
    server = bind_for_sweep(port) if dashboard else None  # a port in use stops it here
    runner = make_executor(settings)  # connects to Ray now: a bad address fails before anything is written
    try:
        with open_database(db, db_retry_seconds) as database, sweep_dashboard(server, database, metrics):
            print_plan(make_plan(cfg))
            if check is not None:
                checks["transfer_check"] = _check_transfer(
                    cfg, check, database, metrics, runner, sweep_name, force, not no_reuse
                )
            result = run_sweep(
                cfg,
                database,
                metrics,
                sweep_name,
                executor=runner,
                new=new,
                console=err_console,
                checks=checks,
                reuse=not no_reuse,
            )
            payload = export_sweep(database, result.sweep)
    finally:
        runner.close()
    print_export(payload)


def _check_transfer(cfg, check, database, metrics, runner, sweep_name: str, force: bool, reuse: bool) -> dict:
    """The transfer check before level 0 (`SWEEP-transfer-check`, its plot in the metrics
    folder's `transfer-check-plots/`); on FAIL without --force the sweep is stored stopped with
    the check's section and the command exits 1."""
    from telescope.cli.transfer_check import print_result
    from telescope.sweep import stop_before_level_zero
    from telescope.transfer_check.run import run_transfer_check
    from telescope.transfer_check.settings import KIND

    name = f"{sweep_name}-{KIND}"
    folder = metrics.root / f"{KIND}-plots"
    folder.mkdir(parents=True, exist_ok=True)
    result = run_transfer_check(check, database, metrics, runner, name, plot=folder / f"{name}.png", reuse=reuse)
    section = result.report_section()
    if not result.passed and not force:
        stop_before_level_zero(cfg, database, metrics, runner, sweep_name, {"transfer_check": section})
        print_result(result)
        err_console.print("the sweep did not start: the transfer check failed (rerun with --force to sweep anyway)")
        raise typer.Exit(1)
    return section


def _check_user_model(cfg) -> dict:
    """The user's model runs on the sweep's data, and its proxies pass the coord check
    (`[model] check = "coord"`), before anything is written; on FAIL the per-layer slopes
    and roles are printed and the command exits 1."""
    from telescope.coord.model_check import check_user_model

    verdict = check_user_model(cfg)
    if verdict.check == "coord":
        err_console.print(verdict.summary(), highlight=False, markup=False, soft_wrap=True)
    if not verdict.passed:
        print_rows(
            verdict.rows(),
            title=f"coord check: {verdict.steps} steps, lr {verdict.lr:g}; a layer passes with its slope in its bounds",
        )
        err_console.print(
            "the sweep did not start: the coord check failed, so the learning rates would not transfer across widths "
            '(check the roles above; give rules with --rules, or set [model] check = "none" to sweep anyway)'
        )
        raise typer.Exit(1)
    return verdict.to_dict()
