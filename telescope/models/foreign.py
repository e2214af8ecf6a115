"""The parametrization applied to any torch.nn.Module LM (token ids in, logits out).

Your own model gets its role per parameter from the classifier the proxy uses
(telescope.roles: ordered rules, first match wins, no implicit default), its weights
initialised per the table (telescope.weights), the output multiplier on its logits, and
the Muon + AdamW optimizers of telescope's proxy (telescope.optim.groups) with the
transferred per-group learning rates and weight decay, straight from an export file:

    parametrize(model, "export.json")                      # init + logit multiplier, per the export
    optimizers, rows = optimizers_from_export(model, "export.json")

Tied weights (one Parameter reached under two names, e.g. `wte.weight` and
`lm_head.weight`) are classified once: the first rule that matches any of its names
decides, so a tied unembedding is an `embedding` parameter, as in telescope's proxy. The
output multiplier still applies to the module that computes the logits with it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from telescope.errors import ConfigError, TelescopeError
from telescope.models import FACTORY_SPEC
from telescope.models.depth import apply_depth, export_depth, user_depth
from telescope.models.describe import check_measured_on
from telescope.optim.groups import Optimizers, build_optimizers
from telescope.parametrization import (
    Role,
    Table,
    check_same_fingerprint,
    fingerprint,
    get_table,
    width_multiplier,
)
from telescope.roles import (
    FOREIGN_RULES,
    KindRule,
    NameRule,
    ParamRole,
    RuleLike,
    as_rules,
    classify,
    output_modules,
    report_rows,
    roles_of,
)
from telescope.spec import Recipe
from telescope.weights import init_parameters, set_output_multiplier

__all__ = [  # the roles' names are here too: users port a model with this one module
    "FOREIGN_RULES",
    "KindRule",
    "NameRule",
    "apply_output_multiplier",
    "build_foreign_optimizers",
    "build_user_model",
    "classification_report",
    "classify",
    "classify_foreign",
    "infer_width",
    "load_export",
    "load_factory",
    "make_model",
    "optimizers_from_export",
    "output_module",
    "parametrize",
    "user_depth",
]


def classify_foreign(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> dict[str, Role]:
    """Role of every trainable parameter (by the name model.named_parameters() gives it).

    ConfigError naming the parameter when no rule matches it, and when no parameter is an
    unembedding (role `output`)."""
    return roles_of(classify(model, rules))


def classification_report(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> list[dict[str, Any]]:
    """One printable row per parameter: name, shape, role, the rule that decided, fan-in, tied names."""
    return report_rows(classify(model, rules))


# --------------------------------------------------------------------------- factories


def load_factory(spec: str) -> Callable[[int], nn.Module]:
    """The callable `package.module:factory` names (width -> model). The current directory is
    searched first, so a module next to you imports as it would with `python -c`."""
    if not FACTORY_SPEC.fullmatch(spec or ""):
        raise TelescopeError(f"model factory {spec!r} is not of the form package.module:factory")
    module_name, attr_path = spec.split(":")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise TelescopeError(f"model factory {spec!r}: no module named {e.name!r}") from None
        raise TelescopeError(f"model factory {spec!r}: importing {module_name!r} failed: {_one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed to import; say how, in one line
        raise TelescopeError(f"model factory {spec!r}: importing {module_name!r} failed: {_one_line(e)}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise TelescopeError(f"model factory {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TelescopeError(f"model factory {spec!r} is a {type(target).__name__}, not callable")
    return target


def make_model(factory: Callable[[int], nn.Module], width: int, name: str | None = None) -> nn.Module:
    """`factory(width)`, checked to be an nn.Module; a factory that raises (or takes no
    width) is one line."""
    label = name or getattr(factory, "__qualname__", repr(factory))
    try:
        model = factory(width)
    except TelescopeError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code failed (or takes no width); say how, in one line
        raise TelescopeError(f"model factory {label} failed at width {width}: {_one_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise TelescopeError(f"model factory {label} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_user_model(
    factory: str | Callable[[int], nn.Module],
    table: str | Table,
    width: int,
    base_width: int,
    seed: int,
    rules: Sequence[RuleLike] | None = None,
    name: str | None = None,
    depth_alpha: float = 0.0,
    base_depth: int | None = None,
) -> nn.Module:
    """`factory(width)` (a callable, or a "package.module:factory" spec) built from `seed` and
    parametrized per `table`: how trials, coord checks and transfer checks get the user's model.
    With the depth rule on (`depth_alpha` > 0) its residual branches get the branch
    multiplier against `base_depth` (default: its own depth) through forward hooks."""
    if isinstance(factory, str):
        factory, name = load_factory(factory), factory
    with torch.random.fork_rng(devices=[]):  # the factory's own init draws from the global RNG
        torch.manual_seed(seed)
        model = make_model(factory, width, name)
    parametrize(model, table, width, base_width, rules, generator=torch.Generator().manual_seed(seed))
    apply_depth(model, table, depth_alpha, base_depth, rules)
    return model


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ").strip()


# --------------------------------------------------------------------------- parametrize

_APPLIED = "telescope_parametrization"  # marker on the model: what parametrize applied


def _table(table: str | Table) -> Table:
    return get_table(table) if isinstance(table, str) else table


def output_module(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> tuple[str, nn.Module]:
    """The name of the unembedding weight and the module that computes the logits with it."""
    return _output_module(classify(model, rules))


def _output_module(classified: Sequence[ParamRole]) -> tuple[str, nn.Module]:
    modules = {id(m): (n, m) for n, m in output_modules(classified)}
    if len(modules) > 1:
        raise ConfigError(
            f"several unembeddings found ({', '.join(n for n, _ in modules.values())}); "
            "give the extra ones another role with a rule"
        )
    name, module = next(iter(modules.values()))
    if isinstance(module, nn.Embedding):
        raise ConfigError(
            f"the unembedding {name!r} is an nn.Embedding's weight, so no module computes the logits with it; "
            "compute them with an nn.Linear (tie it: lm_head.weight = embedding.weight) so the output multiplier "
            "applies"
        )
    return name, module


def apply_output_multiplier(
    model: nn.Module, table: str | Table, width: int, base_width: int, rules: Sequence[RuleLike] | None = None
) -> float:
    """Scale the logits by the table's output multiplier at m = width / base_width.

    A forward hook on the module that computes the logits (the owner of the unembedding
    weight, e.g. `lm_head`), not on the model: the loss a model computes inside its own
    forward (nanoGPT's `targets=`) then sees the scaled logits too. The value is kept on
    the module and the hook is registered once, so calling this again, or on a deep copy,
    replaces the multiplier and never stacks it. A model loaded from a state_dict has no
    hook: call this (or `parametrize`) after loading one."""
    return _apply_output_multiplier(classify(model, rules), _table(table), width, base_width)


def _apply_output_multiplier(classified: Sequence[ParamRole], table: Table, width: int, base_width: int) -> float:
    multiplier = table.output.multiplier(width_multiplier(width, base_width))
    set_output_multiplier(_output_module(classified)[1], multiplier)
    return multiplier


@torch.no_grad()
def parametrize(
    model: nn.Module,
    table: str | Table | Mapping[str, Any] | Path,
    width: int | None = None,
    base_width: int | None = None,
    rules: Sequence[RuleLike] | None = None,
    generator: torch.Generator | None = None,
    strict: bool = False,
) -> dict[str, Role]:
    """Initialise every parameter per its role's row of the table at m = width / base_width
    (telescope.weights) and put the output multiplier on the logits; returns the roles.

    `table` is a table name (then give `width` and `base_width`), or an export (its dict or
    file): its parametrization, target width and base width are used, and a `width` given
    too must equal the target width. The model's embedding dim must equal the width. Given
    an export, a model that differs from the proxies it was measured on in anything but
    width (head dim, QK-norm, MLP form, tying, vocabulary, experts, depth) gets one warning
    line on stderr, or a TelescopeError with `strict=True`. An export with the depth rule on
    also puts its branch multiplier on the model's residual blocks, whose number must equal
    the export's target depth.

    Telescope's own proxy already does all this in `build_model`: do not parametrize it."""
    t, width, base_width = _parametrization_of(table, width, base_width)
    if _is_export(table):
        check_measured_on(model, load_export(table), rules, strict)  # type: ignore[arg-type]
    classified = classify(model, rules)
    _check_width(classified, width)
    init_parameters(classified, t, width, base_width, generator)
    _apply_output_multiplier(classified, t, width, base_width)
    if _is_export(table):
        alpha, proxy_depth, _ = export_depth(load_export(table), model, rules)  # type: ignore[arg-type]
        apply_depth(model, t, alpha, proxy_depth, rules)
    setattr(model, _APPLIED, {"table": t.name, "width": width, "base_width": base_width})
    return roles_of(classified)


def _parametrization_of(
    table: str | Table | Mapping[str, Any] | Path, width: int | None, base_width: int | None
) -> tuple[Table, int, int]:
    if not _is_export(table):
        if width is None or base_width is None:
            raise TelescopeError("parametrize with a table name needs width and base_width (or pass an export)")
        return _table(table), width, base_width  # type: ignore[arg-type]
    payload = load_export(table)  # type: ignore[arg-type]
    target, base = int(payload["target_width"]), int(payload["base_width"])
    if width is not None and width != target:
        raise TelescopeError(f"width {width} differs from the export's target width {target}")
    if base_width is not None and base_width != base:
        raise TelescopeError(f"base_width {base_width} differs from the export's base width {base}")
    return get_table(payload["parametrization"]), target, base


def _is_export(table: Any) -> bool:
    return isinstance(table, (Mapping, Path)) or (
        isinstance(table, str) and Path(table).suffix.lower() in _EXPORT_SUFFIXES
    )


def _check_width(
    classified: Sequence[ParamRole], width: int, wanted: str = "the width {width} asked for", remedy: str = ""
) -> None:
    """The model's width (its embedding dim) must show and equal `width` (described by `wanted`);
    `remedy` (with {width}: the model's) follows the mismatch."""
    inferred = _embedding_width(classified)
    if inferred is None:
        raise TelescopeError(
            f"cannot tell the model's width to check it against {width} (no single embedding dim): give the "
            "embedding a rule, e.g. rules=[(r'tok\\.weight', 'embedding'), *FOREIGN_RULES]"
        )
    if inferred != width:
        raise TelescopeError(
            f"model width {inferred} (its embedding dim) differs from {wanted.format(width=width)}"
            + remedy.format(width=inferred)
        )


# --------------------------------------------------------------------------- optimizers


def build_foreign_optimizers(
    model: nn.Module,
    table: str | Table,
    lr: float,
    weight_decay: float,
    width: int,
    base_width: int,
    muon_lr_ratio: float = 1.0,
    rules: Sequence[RuleLike] | None = None,
) -> Optimizers:
    """The proxy's optimizers (Muon for Muon roles, AdamW for the rest) for any model, from
    the base values eta0 = `lr` and lambda = `weight_decay` tuned at `base_width`, with
    each group's LR and weight decay transferred to `width`. Groups carry `role`, `names`
    and `peak_lr`; drive a schedule with `optimizers.set_lr_multiplier(f)`."""
    return build_optimizers(model, table, lr, weight_decay, width, base_width, muon_lr_ratio, rules=as_rules(rules))


# --------------------------------------------------------------------------- from an export

_EXPORT_KEYS = ("target_width", "base_width", "parametrization", "fingerprint", "base", "groups")
_EXPORT_SUFFIXES = (".json", ".yaml", ".yml", ".toml")


def load_export(export: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """An export payload: the dict itself, or the JSON/YAML/TOML file `telescope export` wrote."""
    if isinstance(export, Mapping):
        payload = dict(export)
    else:
        path = Path(export)
        if not path.is_file():
            raise TelescopeError(f"{path}: no such export file")
        payload = _parse_export_text(path)
    missing = [k for k in _EXPORT_KEYS if k not in payload]
    if missing:
        raise TelescopeError(f"not a telescope export: missing {', '.join(missing)}")
    for key in ("lr", "weight_decay"):
        if key not in payload["base"]:
            raise TelescopeError(f"not a telescope export: base has no {key!r}")
    return payload


def _parse_export_text(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import json

            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parser's error is a bad file
        raise TelescopeError(f"{path}: cannot read the export: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise TelescopeError(f"{path}: not a telescope export")
    return data


def infer_width(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> int | None:
    """The model's width when it shows: the embedding dimension (None if there is none)."""
    return _embedding_width(classify(model, rules))


def _embedding_width(classified: Sequence[ParamRole]) -> int | None:
    dims = {c.shape[-1] for c in classified if c.role == "embedding" and len(c.shape) == 2}
    return dims.pop() if len(dims) == 1 else None


def _export_role_values(payload: Mapping[str, Any]) -> dict[tuple[str, bool | None], tuple[float, float]]:
    """(lr, weight decay) per (role, inside a residual block); the second is None when the
    export's depth rule is off (then a role has one value wherever it is)."""
    values: dict[tuple[str, bool | None], tuple[float, float]] = {}
    for group in payload["groups"]:
        pair = (float(group["lr"]), float(group["weight_decay"]))
        if values.setdefault((group["role"], group.get("in_block")), pair) != pair:
            raise TelescopeError(f"export gives role {group['role']!r} two different lr/weight_decay values")
    return values


def optimizers_from_export(
    model: nn.Module,
    export: Mapping[str, Any] | str | Path,
    rules: Sequence[RuleLike] | None = None,
    strict: bool = False,
) -> tuple[Optimizers, list[dict[str, Any]]]:
    """Optimizers for your model of the export's target width, with every group's LR and
    weight decay equal to the export's absolute values for its role, and one printable
    row per parameter (parameter, shape, role, optimizer, lr, weight_decay).

    The export's parametrization must be the one this telescope ships under that name
    (torch version aside), the model's embedding dim must equal the target width, and a
    model `parametrize`d must have been parametrized with the same table and widths. The
    optimizers have the export's recipe (Muon momentum and Nesterov, AdamW betas and eps,
    gradient clipping in `step`). A model unlike the proxies warns, or refuses when
    `strict` (see `parametrize`)."""
    payload = load_export(export)
    check_measured_on(model, payload, rules, strict)
    table = get_table(payload["parametrization"])
    base = payload["base"]
    ratio = float(base.get("muon_lr_ratio", 1.0))
    recipe = Recipe.from_fingerprint(payload["fingerprint"])
    alpha, proxy_depth, _ = export_depth(payload, model, rules)
    check_same_fingerprint(
        fingerprint(table, ratio, recipe, depth_alpha=alpha), payload["fingerprint"], ignore=("torch", "model")
    )
    width, base_width = int(payload["target_width"]), int(payload["base_width"])
    _check_width(
        classify(model, rules),
        width,
        "the export's target width {width}",
        f"; export for yours: telescope export {payload.get('sweep', 'SWEEP')} --target-width {{width}}",
    )
    applied = getattr(model, _APPLIED, None)
    wanted = {"table": table.name, "width": width, "base_width": base_width}
    if applied is not None and applied != wanted:
        raise TelescopeError(
            f"the model was parametrized with {applied}, but the export is {wanted}: "
            "parametrize(model, export) with the same export"
        )
    optimizers = build_optimizers(
        model,
        table,
        float(base["lr"]),
        float(base["weight_decay"]),
        width,
        base_width,
        ratio,
        as_rules(rules),
        recipe=recipe,
        depth=user_depth(model, rules, alpha, proxy_depth),
    )
    exported = _export_role_values(payload)
    rows: list[dict[str, Any]] = []
    for opt in optimizers.optimizers:
        kind = "muon" if not isinstance(opt, torch.optim.AdamW) else "adamw"
        for group in opt.param_groups:
            where = (group["role"], group.get("in_block"))
            if where in exported:  # roles the export lacks (e.g. a tied sweep's output) come from the table
                lr, wd = exported[where]
                group["peak_lr"] = group["lr"] = lr
                group["weight_decay"] = wd
                group["lr_factor"] = lr / float(base["lr"])
            rows.extend(
                {
                    "parameter": name,
                    "shape": "x".join(map(str, p.shape)),
                    "role": group["role"],
                    "optimizer": kind,
                    "lr": group["peak_lr"],
                    "weight_decay": group["weight_decay"],
                }
                for name, p in zip(group["names"], group["params"])
            )
    return optimizers, rows
