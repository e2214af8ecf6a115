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
    advice = recommendation(result, width)
    use = advice["values"]
    groups = transfer(
        config.parametrization,
        lr=use["lr"],
        weight_decay=use["weight_decay"],
        muon_lr_ratio=use.get("muon_lr_ratio", 1.0),
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
        "extrapolated": {d["name"]: _at(d, width) for d in result["drift"] or []},
        "recommendation": advice,
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


def _at(drift: dict[str, Any], width: int) -> float:
    """The drift fit's optimum at `width`."""
    return drift["x_inf"] * math.exp(-drift["alpha"] / width)


def recommendation(result: dict[str, Any], width: int) -> dict[str, Any]:
    """Which values to train the model at `width` with, per swept hyperparameter, and why.

    The chosen value (the best point at the calibration width) is what muP transfers; the
    drift fit's extrapolation replaces it only where it differs from it by more than twice
    the fit's standard error (as stored for the config's target), i.e. where the optimum
    measurably keeps moving with width."""
    calibration = result["calibration_width"]
    drift = {d["name"]: d for d in result.get("drift") or []}
    use: dict[str, str] = {}
    values = dict(result["best"])
    for name, chosen in result["best"].items():
        d = drift.get(name)
        se = d.get("log_at_target_se") if d else None
        if d is not None and se is not None and abs(math.log(_at(d, width) / chosen)) > 2 * se:
            use[name], values[name] = "extrapolated", _at(d, width)
        else:
            use[name] = "chosen"
    moved = [n for n, how in use.items() if how == "extrapolated"]
    if not drift:
        why = "one width only, so there is no drift to extrapolate; muP carries them to the target."
    elif all(d.get("log_at_target_se") is None for d in drift.values()):
        why = (
            "with two widths the drift fit passes exactly through both optima and cannot tell a drift "
            "from the grid's resolution; muP carries the chosen values to the target."
        )
    elif not moved:
        why = (
            f"the drift fit's values at width {width} are within twice its standard error of them, so no "
            "drift is measurable beyond noise; muP carries the chosen values to the target."
        )
    else:
        why = (
            f"the optimum of {', '.join(moved)} moves with width by more than twice the fit's standard "
            f"error, so the fit's value at width {width} is used for {'it' if len(moved) == 1 else 'them'}"
            + ("; the others are within its error and keep their chosen values." if len(moved) < len(use) else ".")
        )
    kind = "extrapolated" if moved and len(moved) == len(use) else "chosen" if not moved else "mixed"
    lead = {"chosen": f"Use the values chosen at width {calibration}", "extrapolated": f"Use the values extrapolated to width {width}",
            "mixed": f"Use the values extrapolated to width {width} for {', '.join(moved)} and the chosen ones for the rest"}[kind]  # fmt: skip
    return {"use": use, "values": {**values, **result["fixed"]}, "reason": f"{lead}: {why}"}


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
