"""Which role each parameter plays: the one classifier for the proxy and for any user model.

A role (`embedding`, `hidden`, `output`, `vector`; docs/design.md §2) comes from ordered rules,
first match wins, no implicit default: a parameter no rule covers is an error naming it.
A rule matches a parameter by its full name (`NameRule`, a regular expression) or by what
it is (`KindRule`: a vector, an `nn.Embedding`'s weight, a matrix, a bank of expert
matrices). Tied weights (one Parameter reached under several names, e.g. `wte.weight` and
`lm_head.weight`) are classified once: the first rule matching any of its names decides.

Each classified parameter also gets its true fan-in: the last dim of an `nn.Linear`-style
(out, in) weight and of each (E, out, in) expert matrix, but the first dim of GPT-2's
`Conv1D`, which stores its weight as (in, out).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, Union

from torch import nn

from telescope.blocks import MODULE_ROLES
from telescope.errors import ConfigError
from telescope.parametrization import ROLES, Role

Kind = Literal["vector", "embedding_module", "matrix", "expert_matrices"]
KINDS: tuple[str, ...] = ("vector", "embedding_module", "matrix", "expert_matrices")


@dataclass(frozen=True)
class NameRule:
    pattern: str  # regular expression matched against the whole parameter name
    role: Role


@dataclass(frozen=True)
class KindRule:
    """Matches a parameter by what it is: "vector" (fewer than 2 dims), "embedding_module"
    (an nn.Embedding's weight), "matrix" (2 dims) or "expert_matrices" (3 dims: a bank of
    matrices, one per expert, each its own matrix for init and for Muon; not a convolution's
    kernel)."""

    kind: Kind
    role: Role

    @property
    def pattern(self) -> str:  # shown in reports next to NameRule patterns
        return f"<{self.kind}>"


Rule = Union[NameRule, KindRule]
RuleLike = Union[NameRule, KindRule, tuple[str, str]]

# Telescope's proxy (telescope.proxy.model.Transformer), by name.
PROXY_RULES: tuple[Rule, ...] = (
    NameRule(r"embed\.weight", "embedding"),
    NameRule(r"lm_head\.weight", "output"),
    NameRule(r"blocks\.\d+\.(attn\.(q|k|v|o)|mlp\.(gate|up|down))\.weight", "hidden"),
    NameRule(r"(.*\.)?\w*norm\.weight", "vector"),
)

_EMBED_NAMES = r"(.*\.)?[^.]*(embed|wte|wpe|tok_emb)[^.]*\.weight"
# Not inside a numbered block (`layers.3.output.weight` is an attention projection).
_OUTPUT_NAMES = r"(?!(.*\.)?\d+\.)(.*\.)?(lm_head|[^.]*unembed[^.]*|output|head|output_proj(ection)?)\.weight"

# Common LM layouts (nanoGPT, Llama, GPT-2, Qwen, Mixtral, torch.nn.Transformer): vectors
# first, so a norm or bias inside an `embed*` or `lm_head` module is still a vector; other
# matrices (an MoE router included) and expert banks are hidden; anything else (a conv
# kernel, a 4-D tensor) needs a rule of yours.
FOREIGN_RULES: tuple[Rule, ...] = (
    KindRule("vector", "vector"),
    KindRule("embedding_module", "embedding"),
    NameRule(_EMBED_NAMES, "embedding"),
    NameRule(_OUTPUT_NAMES, "output"),
    KindRule("matrix", "hidden"),
    KindRule("expert_matrices", "hidden"),
)


@dataclass(frozen=True)
class ParamRole:
    """One trainable parameter, classified: its role, the rule that decided, its fan-in,
    and every name (and owning module) reaching it."""

    name: str  # the name model.named_parameters() reports (the first of `aliases`)
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    role: Role
    rule: str
    fan_in: int
    param: nn.Parameter
    owners: tuple[nn.Module, ...]  # the module owning the parameter under each alias
    # (alias, owner) pairs an `output` rule matched: where the logits are computed, also for a
    # tied unembedding whose role is `embedding`
    logit_modules: tuple[tuple[str, nn.Module], ...] = ()


def as_rules(rules: Sequence[RuleLike] | None, default: Sequence[Rule] = FOREIGN_RULES) -> tuple[Rule, ...]:
    """The caller's rules (NameRule, KindRule or (pattern, role) pairs), or `default`."""
    if rules is None:
        return tuple(default)
    out: list[Rule] = []
    for rule in rules:
        if isinstance(rule, (NameRule, KindRule)):
            role = rule.role
        elif isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str):
            role = rule[1]
            kind = re.fullmatch(r"<(\w+)>", rule[0])
            rule = KindRule(kind.group(1), rule[1]) if kind else NameRule(rule[0], rule[1])  # type: ignore[arg-type]
        else:
            raise ConfigError(f"rule {rule!r} is not a (pattern, role) pair, a NameRule or a KindRule")
        if role not in ROLES and not (role in MODULE_ROLES and isinstance(rule, NameRule)):
            raise ConfigError(
                f"rule {rule.pattern!r} has role {role!r}; choose one of {', '.join(ROLES)} (or, naming modules by "
                f"pattern, {' or '.join(MODULE_ROLES)})"
            )
        if isinstance(rule, KindRule) and rule.kind not in KINDS:
            raise ConfigError(f"rule kind {rule.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if isinstance(rule, NameRule):
            try:
                re.compile(rule.pattern)
            except re.error as e:
                raise ConfigError(f"rule pattern {rule.pattern!r} is not a regular expression: {e}") from None
        out.append(rule)
    return tuple(out)


def load_rules(path: str | Path) -> tuple[tuple[str, str], ...]:
    """Your rules from a TOML or JSON file, as (pattern, role) pairs ("<kind>" for a kind
    rule), to be tried before FOREIGN_RULES (see `with_defaults`). TOML:

        [[rule]]
        pattern = 'decoder\\.weight'
        role = "output"
        [[rule]]
        kind = "matrix"
        role = "hidden"

    JSON: {"rule": [{"pattern": "...", "role": "..."}, {"kind": "...", "role": "..."}]}.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as e:
        raise ConfigError(f"--rules {path}: {e.strerror or e}") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"--rules {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}"
        ) from None
    entries = data.get("rule") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--rules {path}: expected a list `rule` of tables, each with pattern (or kind) and role")
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) not in ({"pattern", "role"}, {"kind", "role"}):
            raise ConfigError(f"--rules {path}: rule {i} must have pattern (or kind) and role, got {entry!r}")
        pairs.append((entry["pattern"] if "pattern" in entry else f"<{entry['kind']}>", entry["role"]))
    as_rules(pairs)  # each checked now: role, kind, regular expression
    return tuple(pairs)


def with_defaults(rules: Sequence[RuleLike] = ()) -> tuple[Rule, ...]:
    """The caller's rules, then FOREIGN_RULES (first match wins)."""
    return as_rules(rules) + FOREIGN_RULES


def _is_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D (GPT-2 and relatives), without importing transformers
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def fan_in(shape: Sequence[int], owner: nn.Module | None = None) -> int:
    """The input size of each matrix of a weight: 1 for vectors; the first dim of a
    Conv1D (in, out) weight; the last dim otherwise ((out, in) and (E, out, in))."""
    if len(shape) < 2:
        return 1
    if owner is not None and _is_conv1d(owner) and len(shape) == 2:
        return int(shape[0])
    return int(shape[-1])


def _matches(rule: Rule, name: str, p: nn.Parameter, owner: nn.Module) -> bool:
    if isinstance(rule, NameRule):
        return re.fullmatch(rule.pattern, name) is not None
    if rule.kind == "vector":
        return p.ndim < 2
    if rule.kind == "matrix":
        return p.ndim == 2
    if rule.kind == "expert_matrices":  # a convolution's (out, in, k) kernel is not a bank of matrices
        return p.ndim == 3 and not isinstance(owner, nn.modules.conv._ConvNd)
    return isinstance(owner, nn.Embedding) and name.endswith("weight")  # embedding_module


def _parameters(model: nn.Module) -> list[tuple[list[str], nn.Parameter, list[nn.Module]]]:
    """Every trainable parameter once, with all the names (and owning modules) reaching it,
    in model.named_parameters() order."""
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
    ranked = []
    for names, p, owners in found.values():
        pairs = sorted(zip(names, owners), key=lambda pair: order.get(pair[0], len(order)))
        ranked.append(([n for n, _ in pairs], p, [o for _, o in pairs]))
    return sorted(ranked, key=lambda entry: order.get(entry[0][0], len(order)))


def classify(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> list[ParamRole]:
    """Every trainable parameter with its role (`rules` default: FOREIGN_RULES).

    ConfigError naming the parameter when no rule matches it, and when no parameter is an
    unembedding (role `output`) reached through a module (or a tied embedding)."""
    compiled = tuple(r for r in as_rules(rules) if r.role in ROLES)  # block and branch rules name modules
    classified: list[ParamRole] = []
    for names, p, owners in _parameters(model):
        matched = [
            (rule, name, owner)
            for name, owner in zip(names, owners)
            if (rule := next((r for r in compiled if _matches(r, name, p, owner)), None)) is not None
        ]
        if not matched:
            raise ConfigError(
                f"parameter {names[0]!r} (shape {tuple(p.shape)}) matches no role rule; "
                f"add one, e.g. rules=[({re.escape(names[0])!r}, 'hidden'), *FOREIGN_RULES]"
            )
        winner, _, owner = min(matched, key=lambda item: compiled.index(item[0]))
        logits = tuple((name, o) for rule, name, o in matched if rule.role == "output")
        classified.append(
            ParamRole(
                names[0],
                tuple(names),
                tuple(p.shape),
                winner.role,
                winner.pattern,
                fan_in(p.shape, owner),
                p,
                tuple(owners),
                logits,
            )
        )
    if not output_modules(classified):
        raise ConfigError(
            "no unembedding found: name it with a rule, e.g. rules=[(r'decoder\\.weight', 'output'), *FOREIGN_RULES]"
        )
    return classified


def output_modules(classified: Sequence[ParamRole]) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs through which the unembedding computes the logits."""
    return [pair for c in classified for pair in c.logit_modules]


def roles_of(classified: Sequence[ParamRole]) -> dict[str, Role]:
    return {c.name: c.role for c in classified}


def report_rows(classified: Sequence[ParamRole]) -> list[dict[str, Any]]:
    """One printable row per parameter: name, shape, role, the rule that decided, fan-in, tied names."""
    return [
        {
            "parameter": c.name,
            "shape": "x".join(map(str, c.shape)),
            "role": c.role,
            "rule": c.rule,
            "fan_in": c.fan_in,
            "tied_with": ", ".join(c.aliases[1:]),
        }
        for c in classified
    ]
