"""The transferred hyperparameters of a finished sweep, as data and as JSON/YAML/TOML."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

from telescope.config import parse_config
from telescope.cost import param_counts
from telescope.errors import TelescopeError
from telescope.parametrization import fingerprint, transfer
from telescope.proxy.model import parameter_roles
from telescope.storage.database import Database

ExportFormat = Literal["json", "yaml", "toml"]
MAX_TARGET_PARAMETERS = 10**15  # beyond any model anyone trains; far beyond it, torch cannot index the weights


def export_sweep(db: Database, sweep: str, target_width: int | None = None) -> dict[str, Any]:
    """Base values, fingerprint, provenance and every parameter group's absolute values at
    `target_width` (default: the config's target)."""
    row = db.require_sweep(sweep)
    if row.status != "completed" or not row.result:
        raise TelescopeError(f"sweep {sweep!r} has not finished (status {row.status}); run it to the end first")
    config = parse_config(row.config)
    result = row.result
    width = target_width or result["target_width"]
    if width % config.model.head_dim:
        raise TelescopeError(f"--target-width {width} is not a multiple of head_dim {config.model.head_dim}")
    if param_counts(config.model, width).total > MAX_TARGET_PARAMETERS:
        raise TelescopeError(
            f"--target-width {width} makes a model of {param_counts(config.model, width).total:.3g} parameters, "
            f"more than {MAX_TARGET_PARAMETERS:.0e}: pass the width of the model you will train"
        )
    if width < result["calibration_width"]:
        # The drift fit x* - alpha/n blows up below the widths it was fitted on, and a
        # narrower model is tuned directly by the sweep's own levels.
        raise TelescopeError(
            f"--target-width {width} is below the calibration width {result['calibration_width']}: telescope "
            "transfers to wider models; for a narrower one read its level's best point with `telescope status`"
        )
    base = {**result["best"], **result["fixed"]}
    groups = transfer(
        config.parametrization,
        lr=base["lr"],
        weight_decay=base["weight_decay"],
        muon_lr_ratio=base.get("muon_lr_ratio", 1.0),
        base_width=config.widths.base,
        width=width,
        parameters=parameter_roles(config.model, width, config.widths.base, config.parametrization),
    )
    return {
        "sweep": sweep,
        "target_width": width,
        "base_width": config.widths.base,
        "parametrization": config.parametrization,
        "model": dataclasses.asdict(config.model),  # the proxy family, to build it at target_width
        "fingerprint": fingerprint(config.parametrization, base.get("muon_lr_ratio", 1.0)),
        "base": base,
        "extrapolated": {d["name"]: d["x_inf"] * math.exp(-d["alpha"] / width) for d in result["drift"] or []},
        "groups": [dataclasses.asdict(g) for g in groups],
        "provenance": {
            "objective": result["objective"],
            "calibration_width": result["calibration_width"],
            "best_loss": result["best_loss"],
            "levels": [
                {k: level[k] for k in ("level", "width", "grid", "trials", "diverged", "failed", "best", "best_loss")}
                for level in result["levels"]
            ],
            "warnings": result["warnings"],
        },
    }


def _toml_ready(value: Any) -> Any:
    """TOML has no null: drop None values (and keep everything else as it is)."""
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value if v is not None]
    return value


def render(payload: dict[str, Any], fmt: ExportFormat) -> str:
    if fmt == "json":
        return json.dumps(payload, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(payload, sort_keys=False)
    import tomli_w

    return tomli_w.dumps(_toml_ready(payload))
