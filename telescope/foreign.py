"""The parametrization applied to any torch.nn.Module LM (token ids in, logits out).

Your own model gets its role per parameter from ordered rules (first match wins, no
implicit default), its weights initialised per the table, the output multiplier on its
logits, and the Muon + AdamW optimizers of telescope's proxy (telescope.proxy.optim) with
the transferred per-group learning rates and weight decay, straight from an export file.

Tied weights (one Parameter reached under two names, e.g. `wte.weight` and
`lm_head.weight`) are classified once: the first rule that matches any of its names
decides, so a tied unembedding is an `embedding` parameter, as in telescope's proxy. The
output multiplier still applies to the module that computes the logits with it.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union
from weakref import WeakKeyDictionary

import torch
from torch import nn

from telescope.errors import ConfigError, TelescopeError
from telescope.parametrization import (
    ROLES,
    Role,
    Table,
    check_same_fingerprint,
    fingerprint,
    get_table,
    width_multiplier,
)
from telescope.proxy.optim import NameRule, Optimizers, build_optimizers


@dataclass(frozen=True)
class KindRule:
    """Matches a parameter by what it is rather than by its name (see `FOREIGN_RULES`)."""

    kind: str  # "vector" (ndim < 2), "embedding_module" (an nn.Embedding's weight) or "matrix" (ndim == 2)
    role: Role

    @property
    def pattern(self) -> str:  # shown in reports next to NameRule patterns
        return f"<{self.kind}>"


Rule = Union[NameRule, KindRule]
RuleLike = Union[NameRule, KindRule, tuple[str, str]]

_EMBED_NAMES = r"(.*\.)?[^.]*(embed|wte|wpe|tok_emb)[^.]*\.weight"
# Not inside a numbered block (`layers.3.output.weight` is an attention projection).
_OUTPUT_NAMES = r"(?!(.*\.)?\d+\.)(.*\.)?(lm_head|[^.]*unembed[^.]*|output|head|output_proj(ection)?)\.weight"

# Common LM layouts (nanoGPT, Llama, HF, torch.nn.Transformer): vectors first, so a norm or
# bias inside an `embed*` or `lm_head` module is still a vector; the catch-all is for 2-D
# matrices only, so anything else (a conv kernel, a 3-D expert bank) needs a rule of yours.
FOREIGN_RULES: tuple[Rule, ...] = (
    KindRule("vector", "vector"),
    KindRule("embedding_module", "embedding"),
    NameRule(_EMBED_NAMES, "embedding"),
    NameRule(_OUTPUT_NAMES, "output"),
    KindRule("matrix", "hidden"),
)


@dataclass(frozen=True)
class _Param:
    name: str  # the name model.named_parameters() reports (the first of `aliases`)
    aliases: tuple[str, ...]
    param: nn.Parameter
    owners: tuple[nn.Module, ...]  # the module owning the parameter under each alias


def as_rules(rules: Sequence[RuleLike] | None) -> tuple[Rule, ...]:
    """The caller's rules (NameRule, KindRule or (pattern, role) pairs), or FOREIGN_RULES."""
    if rules is None:
        return FOREIGN_RULES
    out: list[Rule] = []
    for rule in rules:
        if isinstance(rule, (NameRule, KindRule)):
            role = rule.role
        elif isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str):
            role = rule[1]
            rule = NameRule(rule[0], rule[1])
        else:
            raise ConfigError(f"rule {rule!r} is not a (pattern, role) pair, a NameRule or a KindRule")
        if role not in ROLES:
            raise ConfigError(f"rule {rule.pattern!r} has role {role!r}; choose one of {', '.join(ROLES)}")
        if isinstance(rule, NameRule):
            try:
                re.compile(rule.pattern)
            except re.error as e:
                raise ConfigError(f"rule pattern {rule.pattern!r} is not a regular expression: {e}") from None
        out.append(rule)
    return tuple(out)


def _parameters(model: nn.Module) -> list[_Param]:
    """Every trainable parameter once, with all the names (and owning modules) reaching it."""
    found: dict[int, tuple[list[str], nn.Parameter, list[nn.Module]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            name = f"{module_name}.{local}" if module_name else local
            names, _, owners = found.setdefault(id(p), ([], p, []))
            if name not in names:
                names.append(name)
                owners.append(module)
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    params = []
    for names, p, owners in found.values():
        ranked = sorted(zip(names, owners), key=lambda pair: order.get(pair[0], len(order)))
        params.append(_Param(ranked[0][0], tuple(n for n, _ in ranked), p, tuple(o for _, o in ranked)))
    return sorted(params, key=lambda q: order.get(q.name, len(order)))


def _matches(rule: Rule, name: str, p: nn.Parameter, owner: nn.Module) -> bool:
    if isinstance(rule, NameRule):
        return re.fullmatch(rule.pattern, name) is not None
    if rule.kind == "vector":
        return p.ndim < 2
    if rule.kind == "matrix":
        return p.ndim == 2
    if rule.kind == "embedding_module":
        return isinstance(owner, nn.Embedding) and name.endswith("weight")
    raise ConfigError(f"unknown KindRule kind {rule.kind!r}")


def _first_match(rules: Sequence[Rule], name: str, p: nn.Parameter, owner: nn.Module) -> Rule | None:
    return next((r for r in rules if _matches(r, name, p, owner)), None)


@dataclass(frozen=True)
class Classified:
    """One parameter's role and why: the rule that matched, and every name reaching it."""

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    role: Role
    rule: str


def _classify(model: nn.Module, rules: Sequence[Rule]) -> tuple[list[Classified], list[tuple[str, nn.Module]]]:
    """Each parameter's role, and the (name, module) pairs through which the unembedding is reached."""
    classified: list[Classified] = []
    outputs: list[tuple[str, nn.Module]] = []
    for q in _parameters(model):
        per_alias = [(name, owner, _first_match(rules, name, q.param, owner)) for name, owner in zip(q.aliases, q.owners)]
        matched = [(name, owner, rule) for name, owner, rule in per_alias if rule is not None]
        if not matched:
            raise ConfigError(
                f"parameter {q.name!r} (shape {tuple(q.param.shape)}) matches no role rule; "
                f"add one, e.g. rules=[({re.escape(q.name)!r}, 'hidden'), *FOREIGN_RULES]"
            )
        winner = min(matched, key=lambda item: rules.index(item[2]))[2]
        classified.append(Classified(q.name, q.aliases, tuple(q.param.shape), winner.role, winner.pattern))
        outputs.extend((name, owner) for name, owner, rule in matched if rule.role == "output")
    if not outputs:
        raise ConfigError(
            "no unembedding found: name it with a rule, e.g. rules=[(r'decoder\\.weight', 'output'), *FOREIGN_RULES]"
        )
    return classified, outputs


def classify_foreign(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> dict[str, Role]:
    """Role of every trainable parameter (by the name model.named_parameters() gives it).

    ConfigError naming the parameter when no rule matches it, and when no parameter is an
    unembedding (role `output`)."""
    classified, _ = _classify(model, as_rules(rules))
    return {c.name: c.role for c in classified}


def classification_report(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> list[dict[str, Any]]:
    """One printable row per parameter: name, shape, role, the rule that decided, tied names."""
    classified, _ = _classify(model, as_rules(rules))
    return [
        {"parameter": c.name, "shape": "x".join(map(str, c.shape)), "role": c.role, "rule": c.rule,
         "tied_with": ", ".join(c.aliases[1:])}
        for c in classified
    ]  # fmt: skip


# --------------------------------------------------------------------------- factories

_FACTORY_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def load_factory(spec: str) -> Callable[[int], nn.Module]:
    """The callable `package.module:factory` names (width -> model). The current directory is
    searched first, so a module next to you imports as it would with `python -c`."""
    if not _FACTORY_SPEC.fullmatch(spec or ""):
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
    """`factory(width)`, checked to be an nn.Module."""
    model = factory(width)
    if not isinstance(model, nn.Module):
        label = name or getattr(factory, "__qualname__", repr(factory))
        raise TelescopeError(f"model factory {label} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ").strip()


# --------------------------------------------------------------------------- parametrize


class _OutputMultiplier:
    """Forward hook scaling a module's output: the table's multiplier on the logits."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output * self.value


_HOOKS: WeakKeyDictionary[nn.Module, tuple[_OutputMultiplier, Any]] = WeakKeyDictionary()


def _table(table: str | Table) -> Table:
    return get_table(table) if isinstance(table, str) else table


def output_module(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> tuple[str, nn.Module]:
    """The name of the unembedding weight and the module that computes the logits with it."""
    _, outputs = _classify(model, as_rules(rules))
    modules = {id(m): (n, m) for n, m in outputs}
    if len(modules) > 1:
        raise ConfigError(
            f"several unembeddings found ({', '.join(n for n, _ in modules.values())}); "
            "give the extra ones another role with a rule"
        )
    name, module = next(iter(modules.values()))
    if isinstance(module, nn.Embedding):
        raise ConfigError(
            f"the unembedding {name!r} is an nn.Embedding's weight, so no module computes the logits with it; "
            "compute them with an nn.Linear (tie it: lm_head.weight = embedding.weight) so the output multiplier applies"
        )
    return name, module


def apply_output_multiplier(
    model: nn.Module, table: str | Table, width: int, base_width: int, rules: Sequence[RuleLike] | None = None
) -> float:
    """Scale the logits by the table's output multiplier at m = width / base_width.

    A forward hook on the module that computes the logits (the owner of the unembedding
    weight, e.g. `lm_head`), not on the model: the loss a model computes inside its own
    forward (nanoGPT's `targets=`) then sees the scaled logits too. Calling it again
    replaces the multiplier. Hooks are not saved in state_dicts: call it again (or
    `parametrize`) after building a model from a checkpoint."""
    multiplier = _table(table).output.multiplier(width_multiplier(width, base_width))
    _, module = output_module(model, rules)
    if module in _HOOKS:
        hook, handle = _HOOKS.pop(module)
        handle.remove()
    if multiplier != 1.0:
        hook = _OutputMultiplier(multiplier)
        _HOOKS[module] = (hook, module.register_forward_hook(hook))
    return multiplier


@torch.no_grad()
def parametrize(
    model: nn.Module,
    table: str | Table,
    width: int,
    base_width: int,
    rules: Sequence[RuleLike] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Role]:
    """Initialise every parameter per its role's row of `table` at m = width / base_width and
    put the output multiplier on the logits; returns the roles.

    - embedding: normal, the table's std (constant 1.0 in the shipped tables); an
      nn.Embedding's padding row stays zero.
    - hidden: normal, std = 1/sqrt(fan_in) with fan_in = the weight's last dim.
    - output: zero in the muP tables, normal 1/sqrt(fan_in) in `sp` (a tied unembedding is
      an embedding and keeps the embedding init).
    - vector: biases zero, everything else (norm gains) ones.

    Telescope's own proxy already does all this in `build_model`: do not parametrize it."""
    t = _table(table)
    m = width_multiplier(width, base_width)
    classified, _ = _classify(model, as_rules(rules))
    params = {q.name: q for q in _parameters(model)}
    for c in classified:
        q = params[c.name]
        init = t.rule(c.role).init
        weight = q.param
        if c.role == "vector" and c.name.endswith("bias"):
            weight.zero_()
        elif init.kind == "zero":
            weight.zero_()
        elif init.kind == "ones":
            weight.fill_(1.0)
        else:
            weight.normal_(0.0, init.std(m, weight.shape[-1] if weight.ndim else 1), generator=generator)
        for owner in q.owners:
            if isinstance(owner, nn.Embedding) and owner.padding_idx is not None:
                owner.weight[owner.padding_idx].zero_()
    apply_output_multiplier(model, t, width, base_width, rules)
    return {c.name: c.role for c in classified}


# --------------------------------------------------------------------------- optimizers


def _exact_rules(roles: Mapping[str, Role]) -> list[NameRule]:
    return [NameRule(re.escape(name), role) for name, role in roles.items()]


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
    roles = classify_foreign(model, rules)
    return build_optimizers(model, table, lr, weight_decay, width, base_width, muon_lr_ratio, rules=_exact_rules(roles))


# --------------------------------------------------------------------------- from an export

_EXPORT_KEYS = ("target_width", "base_width", "parametrization", "fingerprint", "base", "groups")


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
    classified, _ = _classify(model, as_rules(rules))
    dims = {c.shape[-1] for c in classified if c.role == "embedding" and len(c.shape) == 2}
    return dims.pop() if len(dims) == 1 else None


def _export_role_values(payload: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    values: dict[str, tuple[float, float]] = {}
    for group in payload["groups"]:
        pair = (float(group["lr"]), float(group["weight_decay"]))
        if values.setdefault(group["role"], pair) != pair:
            raise TelescopeError(f"export gives role {group['role']!r} two different lr/weight_decay values")
    return values


def optimizers_from_export(
    model: nn.Module,
    export: Mapping[str, Any] | str | Path,
    rules: Sequence[RuleLike] | None = None,
) -> tuple[Optimizers, list[dict[str, Any]]]:
    """Optimizers for your model of the export's target width, with every group's LR and
    weight decay equal to the export's absolute values for its role, and one printable
    row per parameter (parameter, shape, role, optimizer, lr, weight_decay).

    The export's parametrization must be the one this telescope ships under that name
    (torch version aside), and the model's embedding dim must equal the target width."""
    payload = load_export(export)
    table = get_table(payload["parametrization"])
    base = payload["base"]
    ratio = float(base.get("muon_lr_ratio", 1.0))
    check_same_fingerprint(fingerprint(table, ratio), payload["fingerprint"], ignore=("torch",))
    width, base_width = int(payload["target_width"]), int(payload["base_width"])
    inferred = infer_width(model, rules)
    if inferred is not None and inferred != width:
        raise TelescopeError(
            f"model width {inferred} (its embedding dim) differs from the export's target width {width}; "
            f"export for your width: telescope export {payload.get('sweep', 'SWEEP')} --target-width {inferred}"
        )
    optimizers = build_foreign_optimizers(
        model, table, float(base["lr"]), float(base["weight_decay"]), width, base_width, ratio, rules
    )
    exported = _export_role_values(payload)
    rows: list[dict[str, Any]] = []
    for opt in optimizers.optimizers:
        kind = "muon" if not isinstance(opt, torch.optim.AdamW) else "adamw"
        for group in opt.param_groups:
            if group["role"] in exported:  # roles the export lacks (e.g. a tied sweep's output) come from the table
                lr, wd = exported[group["role"]]
                group["peak_lr"] = group["lr"] = lr
                group["weight_decay"] = wd
                group["lr_factor"] = lr / float(base["lr"])
            rows.extend(
                {"parameter": name, "shape": "x".join(map(str, p.shape)), "role": group["role"],
                 "optimizer": kind, "lr": group["peak_lr"], "weight_decay": group["weight_decay"]}
                for name, p in zip(group["names"], group["params"])
            )  # fmt: skip
    return optimizers, rows
