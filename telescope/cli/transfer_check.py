"""`telescope transfer-check [CONFIG]`: does the optimal learning rate transfer across width (or depth)?"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

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
    styled,
    trial_printer,
)
from telescope.errors import TelescopeError


def transfer_check(
    config: Annotated[
        Path | None, typer.Argument(help="Sweep config (TOML): its model, train, executor and parametrization.")
    ] = None,
    parametrization: Annotated[
        str | None,
        typer.Option("--parametrization", "-p", help="paper, muon, adamw or sp. Default: the config's, else paper."),
    ] = None,
    widths: Annotated[
        str | None, typer.Option(help="Comma-separated widths. Default 64,256; with CONFIG its base and 4x base.")
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(help="Check across these depths (comma-separated, increasing) at one width instead of widths."),
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="With --depths: the width. Default 64, or the config's base width.")
    ] = None,
    depth_alpha: Annotated[
        float | None,
        typer.Option(
            "--depth-alpha",
            help="The depth rule's branch exponent: 0 off, 0.5 depth-muP, 1 CompleteP. Default: the config's when it "
            "has the rule on, else 1 (README: Depth).",
        ),
    ] = None,
    points: Annotated[int, typer.Option(help="Learning rates per line, in steps of sqrt(2).")] = 5,
    steps: Annotated[int | None, typer.Option(help="Training steps per trial. Default 200, or the config's.")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per learning rate; the optimum is located on the seed mean.")] = 2,
    lr: Annotated[
        float | None,
        typer.Option(help="Centre of the LR line. Default: the table's default LR, or the config's lr range centre."),
    ] = None,
    threshold: Annotated[float, typer.Option(help="Largest drift per doubling that passes, in grid steps.")] = 1.0,
    model: Annotated[
        str | None, typer.Option("--model", help="Your model: package.module:factory, factory(width) -> nn.Module.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Role rules for --model (TOML or JSON), tried before the defaults.")
    ] = None,
    executor: Annotated[
        ExecutorKind | None, typer.Option(help="ray or local. Default: the config's, else ray.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Check name in the database. Default: from the settings.")] = None,
    new: NewOption = False,
    no_reuse: NoReuseOption = False,
    db: DbOption = None,
    db_retry_seconds: DbRetryOption = DEFAULT_RETRY_SECONDS,
    store: StoreOption = None,
    plot: Annotated[Path | None, typer.Option(help="Draw loss vs lr per width, optima marked, to this PNG.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole result as one JSON object.")] = False,
) -> None:
    """Line-sweep the learning rate at each width (or, with --depths, each depth at one width),
    locate the optima and judge whether they stay put: exit 0 on PASS, 1 on FAIL, 2 on bad
    input. Trials are stored and resumable."""
    from telescope.cli.checks import check_plot_file
    from telescope.cli.coord_check import parse_depths, parse_widths
    from telescope.transfer_check.plot import check_plot_path
    from telescope.transfer_check.run import run_transfer_check
    from telescope.transfer_check.settings import check_settings

    if depths is None and width is not None:
        raise TelescopeError("--width sets the one width of a check across --depths; for widths pass --widths")
    if depths is not None and widths is not None:
        raise TelescopeError("--depths checks one width: give it with --width, not --widths")
    checked = parse_widths(widths) if widths else (width,) if width is not None else None
    settings, executor_settings = build_settings(
        config,
        parametrization,
        checked,
        points,
        steps,
        seeds,
        lr,
        threshold,
        model,
        rules,
        parse_depths(depths) if depths else (),
    )
    if depth_alpha is not None or (depths and not settings.model.depth_alpha):
        from telescope.parametrization import DEFAULT_DEPTH_ALPHA, check_depth_alpha

        alpha = check_depth_alpha(DEFAULT_DEPTH_ALPHA if depth_alpha is None else depth_alpha, "--depth-alpha")
        settings = dataclasses.replace(settings, model=dataclasses.replace(settings.model, depth_alpha=alpha))
    if executor is not None:
        executor_settings = dataclasses.replace(executor_settings, kind=executor.value)
    if plot is not None:
        check_plot_file(check_plot_path(plot))
    check_settings(settings)
    # The deepest model decides whether the widths fit the device's memory.
    deepest = dataclasses.replace(settings.model, depth=max(settings.depths or (settings.model.depth,)))
    result = run_stored(
        name,
        (deepest, settings.train, executor_settings),
        None if settings.user_model else (settings.widths, "--width" if settings.depths else "--widths"),
        store,
        db,
        db_retry_seconds,
        lambda database, metrics, runner: run_transfer_check(
            settings, database, metrics, runner, name, trial_printer(settings.objective), plot, new, not no_reuse
        ),
    )
    if json_out:
        from telescope.transfer_check.run import dumps

        typer.echo(dumps(result))
    else:
        print_result(result)
    raise typer.Exit(0 if result.passed else 1)


def build_settings(
    config: Path | None,
    parametrization: str | None,
    widths: tuple[int, ...] | None,
    points: int,
    steps: int | None,
    seeds: int,
    lr: float | None,
    threshold: float,
    model: str | None,
    rules: Path | None = None,
    depths: tuple[int, ...] = (),
):
    """(CheckSettings, ExecutorSettings) from the built-in defaults or a sweep config (its
    model: the built-in proxy or the user's own, replaced by --model and --rules as
    `telescope sweep` replaces it)."""
    from telescope.cli.common import load_sweep_config, model_rules
    from telescope.transfer_check.settings import DEFAULT_DEPTH_WIDTH, CheckSettings, settings_from_config
    from telescope.trials.base import ExecutorSettings

    common: dict[str, Any] = {"points": points, "seeds": seeds, "threshold": threshold, "depths": depths}
    if config is None:
        settings = CheckSettings(**common, model_factory=model, model_rules=model_rules(rules, model))
        if widths is not None or depths:
            settings = dataclasses.replace(settings, widths=widths or (DEFAULT_DEPTH_WIDTH,))
        executor_settings = ExecutorSettings(kind="ray", cpus_per_trial=1.0)
    else:
        cfg = load_sweep_config(config, model, rules)
        settings = settings_from_config(cfg, widths, **common)
        executor_settings = cfg.executor
    if parametrization is not None:
        settings = dataclasses.replace(settings, parametrization=parametrization)
    if lr is not None:
        settings = dataclasses.replace(settings, lr_center=lr)
    if steps is not None:
        warmup = min(settings.train.warmup_steps, steps)
        settings = dataclasses.replace(
            settings, train=dataclasses.replace(settings.train, steps=steps, warmup_steps=warmup)
        )
    return settings, executor_settings


def print_result(result) -> None:
    """The table of optima, the per-doubling drift table, the verdict and its reasons."""
    v, s = result.verdict, result.settings
    axis, bigger = s.axis, "deeper" if s.depths else "wider"
    widths = [
        {
            axis: r.width,
            "optimum lr": f"{r.optimum_lr:.4g}",
            "steps": f"{r.optimum_steps:+.2f}",
            "best loss": f"{r.best_loss:.4f}",
            "edge": r.edge or "-",
            "seed std": f"{r.seed_std_steps:.2f}" if r.seed_std_steps is not None else "-",
        }
        for r in v.widths
    ]
    across = f" across depth at width {s.widths[0]} (depth_alpha {s.model.depth_alpha:g})" if s.depths else ""
    console.print(
        f"transfer check {result.name}: {s.parametrization}{across}, lr {s.center:.3g} x {s.step:.3g}^k, "
        f"{s.points} points, {s.seeds} seed(s), {s.train.steps} steps",
        highlight=False,
    )
    print_rows(widths, title=f"optima per {axis}")
    doublings = [
        {
            f"{axis}s": f"{d.width_lo} -> {d.width_hi}",
            "drift/doubling": f"{d.drift_per_doubling:+.2f}"
            + (f" ± {d.drift_std:.2f}" if d.drift_std is not None else ""),
            "within": "yes" if d.drift_ok else "NO",
            f"{bigger} better": "yes" if d.wider_better else "NO",
        }
        for d in v.doublings
    ]
    print_rows(doublings, title=f"drift in grid steps (threshold {v.threshold_steps:g} per doubling)")
    color = "green" if v.passed else "red"
    console.print(styled(v.label, f"bold {color}"), highlight=False)
    for reason in v.reasons:
        console.print(f"  - {reason}", highlight=False)
    if result.plot:
        console.print(f"plot: {result.plot}", highlight=False)
