"""`telescope plan CONFIG`: what each level of the sweep will run and cost, without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from telescope import readable
from telescope.cli.common import ModelOption, RulesOption, WideOption, load_sweep_config, print_rows
from telescope.cost import Plan
from telescope.cost import plan as make_plan


def plan(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
    model: ModelOption = None,
    rules: RulesOption = None,
    no_data_check: Annotated[
        bool, typer.Option("--no-data-check", help="Skip checking the data and device (to plan for another machine).")
    ] = False,
    wide: WideOption = False,
) -> None:
    """Print every level's width, parameters, grid, trials and FLOPs, and the totals against one target run.

    Like `telescope sweep`, it first checks that the data loads and fits the model and that
    the device exists here (exit 2 if not); --no-data-check skips that."""
    cfg = load_sweep_config(config, model, rules)
    if cfg.user_model:
        from telescope.models.depth import check_user_blocks

        check_user_blocks(cfg.source, cfg.widths.base, cfg.model.depth_alpha)
    if not no_data_check:
        from telescope.runs.preflight import check_inputs

        check_inputs(cfg.model, cfg.train, cfg.executor)
    p = make_plan(cfg)
    if json_out:
        typer.echo(json.dumps(p.to_dict(), indent=2))
        return
    print_plan(p, wide)


def print_plan(p: Plan, wide: bool = False) -> None:
    title = f"sweep plan{f': {p.name}' if p.name else ''} ({readable.count(p.tokens_per_trial)} tokens per trial)"
    print_rows(_level_rows(p), title=title, drop=["heads", "FLOPs/trial"], wide=wide)
    print_rows(_total_rows(p), title="totals", wide=wide)


def _level_rows(p: Plan) -> list[dict[str, object]]:
    return [
        {
            "level": lc.level,
            "width": lc.width,
            "heads": lc.heads,
            "params": readable.count(lc.params),
            "grid": lc.grid,
            "trials": lc.trials,
            "FLOPs/trial": readable.flops(lc.flops_per_trial),
            "FLOPs/level": readable.flops(lc.flops_per_level),
        }
        for lc in p.levels
    ]


def _total_rows(p: Plan) -> list[dict[str, object]]:
    return [
        {"quantity": "sweep", "value": f"{readable.flops(p.sweep_flops)} in {p.sweep_trials} trials"},
        {
            "quantity": "edge extension (average)",
            "value": f"+{p.expected_extension_trials:.1f} trials a step, at most +{p.extension_trials_per_step} "
            f"({readable.flops(p.extension_flops_per_step)})",
        },
        {
            "quantity": "one target run",
            "value": f"{readable.flops(p.target_flops)} (width {p.target_width}"
            + (f", depth {p.target_depth}" if p.target_depth is not None else "")
            + f", {readable.count(p.target_params)} params)",
        },
        {"quantity": "sweep / target run", "value": f"{p.ratio:.3g}x"},
        {
            "quantity": "brute-force grid at target",
            "value": f"{readable.flops(p.brute_force_flops)} in {p.brute_force_trials} trials",
        },
        {"quantity": "saving vs brute force", "value": f"{p.saving:.3g}x"},
        *_depth_rows(p),
    ]


def _depth_rows(p: Plan) -> list[dict[str, object]]:
    """With [depths]: the same sweep with proxies of the target's depth, and what the shallow ones save."""
    if p.full_depth_sweep_flops is None:
        return []
    return [
        {
            "quantity": f"same sweep at depth {p.target_depth}",
            "value": f"{readable.flops(p.full_depth_sweep_flops)} (proxies of the target's depth)",
        },
        {"quantity": f"saving of depth {p.proxy_depth} proxies", "value": f"{p.depth_saving:.3g}x"},
    ]
