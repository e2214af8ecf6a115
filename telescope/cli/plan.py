"""`telescope plan CONFIG`: what each level of the sweep will run and cost, without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import ModelOption, RulesOption, load_sweep_config, print_rows
from telescope.cost import Plan, plan as make_plan


def plan(
    config: Annotated[Path, typer.Argument(help="Sweep config (TOML).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
    model: ModelOption = None,
    rules: RulesOption = None,
) -> None:
    """Print every level's width, parameters, grid, trials and FLOPs, and the totals against one target run."""
    p = make_plan(load_sweep_config(config, model, rules))
    if json_out:
        typer.echo(json.dumps(p.to_dict(), indent=2))
        return
    print_plan(p)


def print_plan(p: Plan) -> None:
    print_rows(_level_rows(p), title=f"sweep plan{f': {p.name}' if p.name else ''} ({p.tokens_per_trial:,} tokens per trial)")
    print_rows(_total_rows(p), title="totals")


def _level_rows(p: Plan) -> list[dict[str, object]]:
    return [
        {
            "level": lc.level,
            "width": lc.width,
            "heads": lc.heads,
            "params": _count(lc.params),
            "grid": lc.grid,
            "trials": lc.trials,
            "FLOPs/trial": _flops(lc.flops_per_trial),
            "FLOPs/level": _flops(lc.flops_per_level),
        }
        for lc in p.levels
    ]


def _total_rows(p: Plan) -> list[dict[str, object]]:
    return [
        {"quantity": "sweep", "value": f"{_flops(p.sweep_flops)} FLOPs in {p.sweep_trials} trials"},
        {
            "quantity": "edge extension (possible)",
            "value": f"up to +{p.extension_trials_per_step} trials ({_flops(p.extension_flops_per_step)} FLOPs) per step",
        },
        {
            "quantity": "one target run",
            "value": f"{_flops(p.target_flops)} FLOPs (width {p.target_width}, {_count(p.target_params)} params)",
        },
        {"quantity": "sweep / target run", "value": f"{p.ratio:.3g}x"},
        {
            "quantity": "brute-force grid at target",
            "value": f"{_flops(p.brute_force_flops)} FLOPs in {p.brute_force_trials} trials",
        },
        {"quantity": "saving vs brute force", "value": f"{p.saving:.3g}x"},
    ]


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _flops(x: float) -> str:
    return f"{x:.3g}"
