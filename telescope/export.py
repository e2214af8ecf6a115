"""The transferred hyperparameters of a finished sweep, as data and as JSON/YAML/TOML."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

from telescope.config import SweepConfig, parse_config
from telescope.cost import param_counts
from telescope.errors import TelescopeError
from telescope.models import model_identity
from telescope.parametrization import Depth, fingerprint, get_table, transfer
from telescope.proxy.model import parameter_roles
from telescope.results import SweepResult, finished_sweep
from telescope.storage.database import Database

ExportFormat = Literal["json", "yaml", "toml"]
MAX_TARGET_PARAMETERS = 10**15  # beyond any model anyone trains; far beyond it, torch cannot index the weights


def export_sweep(
    db: Database,
    sweep: str,
    target_width: int | None = None,
    target_config: str | None = None,
    target_depth: int | None = None,
) -> dict[str, Any]:
    """Base values, fingerprint, provenance, what the proxies were (`measured_on`) and every
    parameter group's absolute values at `target_width` and `target_depth` (defaults: the
    config's targets), by the model's own parameter names. `target_config`: the full-size
    Hugging Face config of a sweep over `[model] hf_config`; the width is its own."""
    row, result = finished_sweep(db, sweep)
    config = parse_config(row.config)
    target = None
    if target_config is not None:
        target = target_model(config, target_config, target_width)
        target_width = target.width
    width = target_width or result.target_width
    if not config.user_model and width % config.model.head_dim:
        raise TelescopeError(f"--target-width {width} is not a multiple of head_dim {config.model.head_dim}")
    if not config.user_model and param_counts(config.model, width).total > MAX_TARGET_PARAMETERS:
        raise TelescopeError(
            f"--target-width {width} makes a model of {param_counts(config.model, width).total:.3g} parameters, "
            f"more than {MAX_TARGET_PARAMETERS:.0e}: pass the width of the model you will train"
        )
    if width < result.calibration_width:
        # The drift fit x* - alpha/n blows up below the widths it was fitted on, and a
        # narrower model is tuned directly by the sweep's own levels.
        raise TelescopeError(
            f"--target-width {width} is below the calibration width {result.calibration_width}: telescope "
            "transfers to wider models; for a narrower one read its level's best point with `telescope status`"
        )
    base = {**result.best, **result.fixed}
    advice = recommendation(result, width)
    use = advice["values"]
    ratio = use.get("muon_lr_ratio", 1.0)
    alpha = config.model.depth_alpha
    parameters, blocks, proxy_depth, depth = _target(config, width, target, target_depth)
    groups = transfer(
        config.parametrization,
        lr=use["lr"],
        weight_decay=use["weight_decay"],
        muon_lr_ratio=use.get("muon_lr_ratio", 1.0),
        base_width=config.widths.base,
        width=width,
        parameters=parameters,
        depth=Depth(depth or 1, proxy_depth or depth or 1, alpha),
        blocks=blocks,
        adamw_eps=config.train.adamw_eps,
    )
    identity = model_identity(config.source.factory, config.source.hf_path, config.source.hf_config_hash)
    model = config.to_dict()["model"]  # the proxy family (or the user's model), to build it at the target
    if not config.user_model:
        model["depth"] = depth
    return {
        "sweep": sweep,
        "target_width": width,
        "base_width": config.widths.base,
        "proxy_depth": proxy_depth,
        "target_depth": depth,
        "depth": depth_section(config.parametrization, alpha, proxy_depth, depth),
        "parametrization": config.parametrization,
        "model": model,
        "fingerprint": fingerprint(config.parametrization, ratio, config.train.recipe, identity, alpha),
        "measured_on": measured_on(config),
        "notes": target.notes if target is not None else [],
        "base": base,
        "extrapolated": {d.name: d.at(width) for d in result.drift or ()},
        "recommendation": advice,
        "groups": [dataclasses.asdict(g) for g in groups],
        "provenance": {
            "objective": result.objective,
            "calibration_width": result.calibration_width,
            "best_loss": result.best_loss,
            "levels": [
                {k: v for k, v in dataclasses.asdict(level).items() if k != "warnings"} for level in result.levels
            ],
            "warnings": result.warnings,
        },
    }


def recommendation(result: SweepResult, width: int) -> dict[str, Any]:
    """Which values to train the model at `width` with, per swept hyperparameter, and why.

    The chosen value (the best point at the calibration width) is what muP transfers; the
    drift fit's extrapolation replaces it only where it differs from it by more than twice
    the fit's standard error (as stored for the config's target), i.e. where the optimum
    measurably keeps moving with width."""
    calibration = result.calibration_width
    use: dict[str, str] = {}
    values = dict(result.best)
    for name, chosen in result.best.items():
        d = result.drift_of(name)
        se = d.log_at_target_se if d else None
        if d is not None and se is not None and abs(math.log(d.at(width) / chosen)) > 2 * se:
            use[name], values[name] = "extrapolated", d.at(width)
        else:
            use[name] = "chosen"
    moved = [n for n, how in use.items() if how == "extrapolated"]
    if not result.drift:
        why = "one width only, so there is no drift to extrapolate; muP carries them to the target."
    elif all(d.log_at_target_se is None for d in result.drift):
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
    lead = {
        "chosen": f"Use the values chosen at width {calibration}",
        "extrapolated": f"Use the values extrapolated to width {width}",
        "mixed": f"Use the values extrapolated to width {width} for {', '.join(moved)} and the chosen ones for the "
        "rest",
    }[kind]
    return {"use": use, "values": {**values, **result.fixed}, "reason": f"{lead}: {why}"}


def measured_on(config: SweepConfig) -> dict[str, Any]:
    """What the sweep measured on: the proxies' architecture (telescope.models.describe, and
    the Hugging Face config without its width fields, the factory, or the built-in proxy's
    shape) and the training horizon."""
    import torch

    from telescope.models.describe import describe
    from telescope.roles import PROXY_RULES, with_defaults

    source, train, base = config.source, config.train, config.widths.base
    if config.user_model:
        from telescope.models.measure import build_on_meta

        model, rules = build_on_meta(source, base), with_defaults(source.rules)
    else:
        from telescope.proxy.model import build_model

        with torch.device("meta"):
            model, rules = build_model(config.model, base, base, config.parametrization), PROXY_RULES
    if source.hf_config is not None:
        from telescope.models import hf

        architecture: dict[str, Any] = {"hf_config": hf.architecture(hf.read_config(source.hf_path))}
    elif source.factory is not None:
        architecture = {"factory": source.factory}
    else:
        architecture = {"proxy": dataclasses.asdict(config.model)}
    return {
        "model": describe(model, rules),
        "architecture": architecture,
        "horizon": {
            "tokens_per_trial": train.steps * train.batch_size * config.model.seq_len,
            "steps": train.steps,
            "batch_size": train.batch_size,
            "seq_len": config.model.seq_len,
            "schedule": train.schedule,
            "warmup_steps": train.warmup_steps,
            "final_lr_ratio": train.final_lr_ratio,
        },
    }


@dataclasses.dataclass(frozen=True)
class TargetModel:
    width: int
    model: Any  # the target, on the meta device
    notes: list[str]  # how the target differs from the proxies besides its width (depth, vocab)


def target_model(config: SweepConfig, path: str, width: int | None) -> TargetModel:
    """The full-size model of `--target-config PATH` (a sweep over `[model] hf_config`):
    its width, its parameters, and its depth or vocabulary where they differ from the
    proxies'. Any other difference is refused: the sweep did not measure that model."""
    from telescope.models import ModelSource, hf
    from telescope.models.measure import build_on_meta

    if config.source.hf_config is None:
        raise TelescopeError("--target-config is for a sweep of [model] hf_config; this sweep's model is not one")
    proxies, target = hf.read_config(config.source.hf_path), hf.read_config(path)
    fields = hf.width_fields(target)
    target_width = target[fields.hidden]
    if width is not None and width != target_width:
        raise TelescopeError(
            f"--target-width {width} differs from the hidden size {target_width} of --target-config {path}"
        )
    free = {"num_hidden_layers", "n_layer", "vocab_size", "layer_types", "max_window_layers", "mlp_only_layers"}
    a, b = hf.architecture(proxies), hf.architecture(target)
    other = sorted(k for k in set(a) | set(b) if k not in free and a.get(k) != b.get(k))
    if other:
        raise TelescopeError(
            f"--target-config {path} is another architecture than the proxies' ({', '.join(other)} differ); "
            "only width, depth and vocabulary may differ"
        )
    notes = [
        f"the target's {k} is {target[k]}, the proxies' {proxies[k]}"
        for k in ("num_hidden_layers", "n_layer", "vocab_size")
        if k in target and target.get(k) != proxies.get(k)
    ]
    source = ModelSource(hf_config=str(hf.config_file(path)), rules=config.source.rules)
    return TargetModel(target_width, build_on_meta(source, target_width), notes)


def depth_section(parametrization: str, alpha: float, proxy_depth: int | None, target_depth: int | None) -> dict:
    """What the export says about depth: alpha, the depths, and the branch multiplier and
    the table's depth rule where the rule is on (each group carries its own factors)."""
    section: dict[str, Any] = {"alpha": alpha, "proxy_depth": proxy_depth, "target_depth": target_depth}
    if alpha > 0 and proxy_depth and target_depth:
        table = get_table(parametrization)
        section["ratio"] = target_depth / proxy_depth
        section["branch_multiplier"] = table.branch_multiplier(Depth(target_depth, proxy_depth, alpha))
        section["rule"] = dataclasses.asdict(table.depth)
    return section


def _target(
    config: SweepConfig, width: int, target: TargetModel | None, target_depth: int | None
) -> tuple[list[Any], list[str], int | None, int | None]:
    """The target's classified parameters, its block names, the proxies' depth and its own
    (None where a user's model shows no blocks and the depth rule is off)."""
    if not config.user_model:
        if target_depth is not None and target_depth < config.model.depth:
            raise TelescopeError(
                f"--target-depth {target_depth} is below the proxies' depth {config.model.depth}: telescope transfers "
                "to deeper models"
            )
        depth = target_depth or config.target_depth
        shape = dataclasses.replace(config.model, depth=depth)
        names = [f"blocks.{i}" for i in range(depth)]
        return (
            parameter_roles(shape, width, config.widths.base, config.parametrization),
            names,
            config.model.depth,
            depth,
        )
    if target_depth is not None:
        raise TelescopeError(
            "--target-depth is for the built-in proxy; your model's depth is its own (--target-config)"
        )
    from telescope.blocks import find_blocks
    from telescope.models.measure import build_on_meta
    from telescope.roles import classify, with_defaults

    rules = with_defaults(config.source.rules)
    model = target.model if target is not None else build_on_meta(config.source, width)
    proxies = build_on_meta(config.source, config.widths.base)
    try:
        names, proxy_depth = [n for n, _ in find_blocks(model, rules)], len(find_blocks(proxies, rules))
    except TelescopeError:
        if config.model.depth_alpha > 0:
            raise
        return classify(model, rules), [], None, None
    return classify(model, rules), names, proxy_depth, len(names)


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
