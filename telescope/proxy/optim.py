"""Parameter roles by explicit name rules, and the optimizers a table asks for.

Rules are ordered (pattern, role) pairs; a parameter's full name must match a pattern
(`re.fullmatch`), the first match wins, and there is no implicit default: a parameter no
rule covers is an error naming it. Pass your own rules to use this with any nn.Module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from telescope.errors import ConfigError
from telescope.parametrization import (
    ADAMW_BETAS,
    ADAMW_EPS,
    LR_ADJUST,
    MUON_MOMENTUM,
    MUON_NESTEROV,
    NS_COEFFICIENTS,
    NS_STEPS,
    Role,
    Table,
    get_table,
    group_lr,
    width_multiplier,
)


@dataclass(frozen=True)
class NameRule:
    pattern: str  # regular expression matched against the whole parameter name
    role: Role


# The proxy's parameter names (telescope.proxy.model.Transformer).
DEFAULT_RULES: tuple[NameRule, ...] = (
    NameRule(r"embed\.weight", "embedding"),
    NameRule(r"lm_head\.weight", "output"),
    NameRule(r"blocks\.\d+\.(attn\.(q|k|v|o)|mlp\.(gate|up|down))\.weight", "hidden"),
    NameRule(r"(.*\.)?\w*norm\.weight", "vector"),
)


def classify_parameters(
    model: nn.Module, rules: Sequence[NameRule] = DEFAULT_RULES
) -> dict[str, Role]:
    """Role of every trainable parameter, by the first rule whose pattern matches its name."""
    compiled = [(re.compile(r.pattern), r.role) for r in rules]
    roles: dict[str, Role] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = next((role for pattern, role in compiled if pattern.fullmatch(name)), None)
        if role is None:
            raise ConfigError(f"parameter {name!r} matches no role rule; add a rule for it")
        roles[name] = role
    return roles


@dataclass
class Optimizers:
    """The Muon and AdamW optimizers of one model; groups carry `role` and `peak_lr`."""

    optimizers: list[torch.optim.Optimizer]

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def set_lr_multiplier(self, multiplier: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["peak_lr"] * multiplier

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)


def param_groups(
    model: nn.Module,
    table: Table,
    lr: float,
    weight_decay: float,
    width: int,
    base_width: int,
    muon_lr_ratio: float = 1.0,
    rules: Sequence[NameRule] = DEFAULT_RULES,
) -> dict[str, list[dict]]:
    """Param groups per optimizer ("muon", "adamw"): one per distinct (role, LR factor,
    weight decay), each with its absolute peak LR and the role it serves."""
    m = width_multiplier(width, base_width)
    roles = classify_parameters(model, rules)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if name not in roles:
            continue
        role = roles[name]
        rule = table.rule(role)
        if rule.optimizer == "muon" and p.ndim != 2:
            raise ConfigError(f"parameter {name!r} has {p.ndim} dims; Muon takes 2-D matrices only")
        key = (rule.optimizer, role, rule.lr_factor(m), rule.weight_decay)
        if key not in groups:
            peak = group_lr(rule, m, lr, muon_lr_ratio)
            groups[key] = {
                "params": [],
                "names": [],
                "role": role,
                "lr_factor": peak / lr if lr else rule.lr_factor(m),
                "peak_lr": peak,
                "lr": peak,
                "weight_decay": weight_decay if rule.weight_decay else 0.0,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    by_optimizer: dict[str, list[dict]] = {"muon": [], "adamw": []}
    for (optimizer, *_), group in groups.items():
        by_optimizer[optimizer].append(group)
    return by_optimizer


def build_optimizers(
    model: nn.Module,
    table: str | Table,
    lr: float,
    weight_decay: float,
    width: int,
    base_width: int,
    muon_lr_ratio: float = 1.0,
    rules: Sequence[NameRule] = DEFAULT_RULES,
    muon_cls: type[torch.optim.Optimizer] | None = None,
) -> Optimizers:
    """Muon (momentum 0.95, Nesterov, 5 NS steps, match_rms_adamw, coupled weight decay) for
    the Muon roles, AdamW for the rest, as the table says. `muon_cls` defaults to ours."""
    table = get_table(table) if isinstance(table, str) else table
    if lr <= 0 or weight_decay < 0 or muon_lr_ratio <= 0:
        raise ConfigError(
            f"need lr > 0, weight_decay >= 0, muon_lr_ratio > 0; got {lr}, {weight_decay}, {muon_lr_ratio}"
        )
    if muon_cls is None:
        from telescope.proxy.muon import Muon

        muon_cls = Muon
    groups = param_groups(model, table, lr, weight_decay, width, base_width, muon_lr_ratio, rules)
    optimizers: list[torch.optim.Optimizer] = []
    if groups["muon"]:
        optimizers.append(
            muon_cls(
                groups["muon"],
                lr=lr,
                momentum=MUON_MOMENTUM,
                nesterov=MUON_NESTEROV,
                ns_coefficients=NS_COEFFICIENTS,
                ns_steps=NS_STEPS,
                adjust_lr_fn=LR_ADJUST,
            )
        )
    if groups["adamw"]:
        optimizers.append(
            torch.optim.AdamW(groups["adamw"], lr=lr, betas=ADAMW_BETAS, eps=ADAMW_EPS)
        )
    return Optimizers(optimizers)
