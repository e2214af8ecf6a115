"""`telescope export SWEEP`: the transferred hyperparameters as a table, JSON, YAML or TOML."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from telescope.cli.common import DbOption, console, styled
from telescope.errors import TelescopeError
from telescope.files import atomic_write


class ExportFormat(str, enum.Enum):
    table = "table"
    json = "json"
    yaml = "yaml"
    toml = "toml"


_SUFFIX_FORMATS = {
    ".json": ExportFormat.json,
    ".yaml": ExportFormat.yaml,
    ".yml": ExportFormat.yaml,
    ".toml": ExportFormat.toml,
}


def export(
    sweep: Annotated[str, typer.Argument(help="A finished sweep's name.")],
    target_width: Annotated[
        int | None, typer.Option("--target-width", min=1, help="Default: the config's target width.")
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="table, json, yaml or toml. Default: table on a terminal, else json "
            "(with --output: from the file's suffix).",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    target_depth: Annotated[
        int | None,
        typer.Option(
            "--target-depth",
            min=1,
            help="Blocks of the model you will train. Default: [depths] target, else the proxies'.",
        ),
    ] = None,
    target_config: Annotated[
        Path | None,
        typer.Option(
            "--target-config",
            help="The full-size Hugging Face config.json of a sweep over [model] hf_config; the width is its own.",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Base values, fingerprint, provenance and the absolute values of every parameter group."""
    from telescope.export import export_sweep, render
    from telescope.storage.database import Database

    fmt = fmt or _default_format(output)
    if output is not None and fmt is ExportFormat.table:
        raise TelescopeError("--format table is for reading on screen; write json, yaml or toml with --output")
    with Database(db, create=False) as database:
        payload = export_sweep(
            database, sweep, target_width, None if target_config is None else str(target_config), target_depth
        )
    if fmt is ExportFormat.table:
        print_export(payload)
        return
    text = render(payload, fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    with atomic_write(output) as f:
        f.write(text.encode())
    console.print(f"wrote {output}", highlight=False)


def _default_format(output: Path | None) -> ExportFormat:
    if output is not None:
        return _SUFFIX_FORMATS.get(output.suffix.lower(), ExportFormat.json)
    return ExportFormat.table if sys.stdout.isatty() else ExportFormat.json


def _short(param: str) -> str:
    """`blocks.*.attn.q.weight` -> `attn.q`: the name a reader scans for, in a narrow column."""
    return param.removeprefix("blocks.*.").removesuffix(".weight")


def print_export(payload: dict[str, Any]) -> None:
    """The base values, the per-group table a person reads, and where the numbers come from."""
    from rich import box
    from rich.table import Table

    prov, fp = payload["provenance"], payload["fingerprint"]
    target = payload["target_width"]
    advice = payload["recommendation"]
    base = Table(title=f"sweep {payload['sweep']}: base values (tuned at width {prov['calibration_width']})")
    for column in ("hyperparameter", "chosen", f"drift fit at {target}", "use"):
        base.add_column(column, no_wrap=True)
    for key, value in payload["base"].items():
        extrapolated = payload["extrapolated"].get(key)
        base.add_row(
            key, f"{value:.4g}", "-" if extrapolated is None else f"{extrapolated:.4g}", advice["use"].get(key, "fixed")
        )
    console.print(base)
    console.print(advice["reason"], highlight=False)

    groups = Table(
        title=f"parameter groups at width {target} ({payload['parametrization']}, m = "
        f"{target / payload['base_width']:g})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="opt: optimizer; wd: weight decay (coupled); mult: forward multiplier on the layer's output",
    )
    rows = [
        (
            g["role"],
            ", ".join(_short(p) for p in g["params"]),
            g["optimizer"],
            f"{g['lr']:.4g}",
            f"{g['weight_decay']:.4g}",
            f"{g['init_std']:.4g}" if g["init"] == "normal" else g["init"],
            f"{g['multiplier']:.4g}",
        )
        for g in payload["groups"]
    ]
    # Numbers never wrap or get cut; only the parameter names fold on a narrow terminal.
    for i, column in enumerate(("role", "parameters", "opt", "lr", "wd", "init std", "mult")):
        cells = [column, *(line for row in rows for line in row[i].splitlines())]
        if column == "parameters":
            groups.add_column(column, overflow="fold")
        else:
            groups.add_column(
                column, no_wrap=True, min_width=max(map(len, cells)), justify="left" if i < 3 else "right"
            )
    for row in rows:
        groups.add_row(*row)
    console.print(groups)

    levels = prov["levels"]
    console.print(
        f"best {prov['objective']} {prov['best_loss']:.4f} at width {prov['calibration_width']}; "
        f"{sum(lv['trials'] for lv in levels)} trials over widths {' -> '.join(str(lv['width']) for lv in levels)}, "
        f"{sum(lv['diverged'] for lv in levels)} diverged, {sum(lv['failed'] for lv in levels)} failed",
        highlight=False,
    )
    console.print(
        f"Muon {fp['lr_adjust']}, {fp['ns_steps']} Newton-Schulz steps, momentum {fp['muon_momentum']}; "
        f"{'' if fp.get('muon_nesterov', True) else 'no '}Nesterov; AdamW betas {tuple(fp['adamw_betas'])}, eps "
        f"{fp['adamw_eps']:g}; "
        f"gradient clipping {'off' if fp.get('grad_clip') is None else fp['grad_clip']}; "
        f"muon_lr_ratio {fp['muon_lr_ratio']:g}; torch {fp['torch']}",
        highlight=False,
    )
    depth = payload.get("depth") or {}
    if depth.get("target_depth") is not None:
        console.print(_depth_line(depth, payload["groups"]), highlight=False)
    horizon = payload.get("measured_on", {}).get("horizon")
    if horizon:
        console.print(
            f"measured on {horizon['tokens_per_trial']:,} tokens per trial ({horizon['steps']} steps of "
            f"{horizon['batch_size']} x {horizon['seq_len']}, {horizon['schedule']})",
            highlight=False,
        )
    for note in payload.get("notes", []):
        console.print(styled("note:", "cyan", f" {note}"), highlight=False)
    for warning in prov["warnings"]:
        console.print(styled("warning:", "yellow", f" {warning}"), highlight=False)


def _depth_line(depth: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """The depth rule in one line: proxies' and target's depth, alpha, and its factors."""
    lead = f"depth: proxies of {depth['proxy_depth']} blocks, exported for {depth['target_depth']}"
    if not depth.get("alpha"):
        same = depth["proxy_depth"] == depth["target_depth"]
        return lead + ("" if same else "; depth_alpha = 0: no depth factors (check: telescope transfer-check --depths)")
    factors = sorted(
        {
            f"{g['role']}{' in blocks' if g.get('in_block') else ''}: "
            f"lr x{g['lr_depth']:.4g}, eps x{g['eps_depth']:.4g}"
            for g in groups
            if g.get("lr_depth", 1.0) != 1.0 or g.get("eps_depth", 1.0) != 1.0
        }
    )
    return f"{lead} (alpha {depth['alpha']:g}): residual branches x{depth.get('branch_multiplier', 1.0):.4g}" + (
        f"; {'; '.join(factors)}" if factors else ""
    )
