"""The optimizers a table asks for, for any classified model: Muon for the Muon roles
(hidden matrices, expert banks per expert), AdamW for the rest, one param group per
(role, LR factor, weight decay, depth factors) with its absolute peak LR (and, for AdamW,
its epsilon: the depth rule scales it inside residual blocks).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from telescope.blocks import find_blocks
from telescope.errors import ConfigError
from telescope.parametrization import (
    LR_ADJUST,
    NO_DEPTH,
    NS_COEFFICIENTS,
    NS_STEPS,
    Depth,
    Table,
    get_table,
    group_lr,
    in_blocks,
    width_multiplier,
)
from telescope.roles import PROXY_RULES, RuleLike, classify
from telescope.spec import Recipe


class Optimizers(torch.optim.Optimizer):
    """The Muon and AdamW optimizers of one model, behaving as one torch optimizer:
    `step`, `zero_grad`, `state_dict`, `load_state_dict` and `param_groups` (every group
    of both, carrying `role`, `names` and `peak_lr`), so LR schedulers wrap it:

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizers, lambda step: min(1.0, (step + 1) / warmup))

    With `grad_clip`, `step` first clips the gradients of all groups to that global norm.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], grad_clip: float | None = None) -> None:
        # Not Optimizer.__init__: the groups and the state live in the inner optimizers.
        self.optimizers = list(optimizers)
        self.grad_clip = grad_clip
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict]:  # type: ignore[override]
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:  # type: ignore[override]
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def set_lr_multiplier(self, multiplier: float) -> None:
        """Every group's LR as `multiplier` times its peak (a schedule without a scheduler)."""
        for group in self.param_groups:
            group["lr"] = group["peak_lr"] * multiplier

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.grad_clip is not None:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(grads, self.grad_clip, torch.nn.utils.get_total_norm(grads))
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        states = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(f"expected the state of {len(self.optimizers)} optimizers from Optimizers.state_dict()")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)

    def __repr__(self) -> str:
        return f"Optimizers({', '.join(type(o).__name__ for o in self.optimizers)})"


def param_groups(
    model: nn.Module,
    table: Table,
    lr: float,
    weight_decay: float,
    width: int,
    base_width: int,
    muon_lr_ratio: float = 1.0,
    rules: Sequence[RuleLike] = PROXY_RULES,
    depth: Depth = NO_DEPTH,
) -> dict[str, list[dict]]:
    """Param groups per optimizer ("muon", "adamw"): one per distinct (role, LR factor,
    weight decay, depth factors), each with its absolute peak LR, the role it serves and
    its epsilon factor (`eps_factor`, times the recipe's AdamW epsilon). With the depth rule
    on, parameters inside the model's residual blocks (telescope.blocks) get the table's
    depth factors for `depth`. Every trainable parameter lands in exactly one group."""
    m = width_multiplier(width, base_width)
    blocks = [name for name, _ in find_blocks(model, rules)] if depth.on else []
    groups: dict[tuple, dict] = {}
    for c in classify(model, rules):
        rule = table.rule(c.role)
        if rule.optimizer == "muon" and len(c.shape) not in (2, 3):
            raise ConfigError(
                f"parameter {c.name!r} has {len(c.shape)} dims; Muon takes matrices (or a 3-D bank of them); "
                "give it another role with a rule"
            )
        inside = in_blocks(c.aliases, blocks) if depth.on else None
        lr_depth, wd_depth, eps_depth = table.depth.factors(c.role, bool(inside), depth)
        key = (rule.optimizer, c.role, rule.lr_factor(m), rule.weight_decay, inside, lr_depth, wd_depth, eps_depth)
        if key not in groups:
            peak = group_lr(rule, m, lr, muon_lr_ratio) * lr_depth
            groups[key] = {
                "params": [],
                "names": [],
                "role": c.role,
                "in_block": inside,
                "lr_factor": peak / lr if lr else rule.lr_factor(m) * lr_depth,
                "peak_lr": peak,
                "lr": peak,
                "weight_decay": weight_decay * wd_depth if rule.weight_decay else 0.0,
                "eps_factor": eps_depth,
            }
        groups[key]["params"].append(c.param)
        groups[key]["names"].append(c.name)
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
    rules: Sequence[RuleLike] = PROXY_RULES,
    muon_cls: type[torch.optim.Optimizer] | None = None,
    recipe: Recipe = Recipe(),
    depth: Depth = NO_DEPTH,
) -> Optimizers:
    """Muon (5 NS steps, match_rms_adamw, coupled weight decay) for the Muon roles, AdamW
    for the rest, as the table says, with the recipe's momentum, betas, eps and gradient
    clipping (default: momentum 0.95, Nesterov, betas (0.9, 0.95), eps 1e-8, no clipping),
    and the table's depth factors at `depth` (none by default). `muon_cls` defaults to ours."""
    table = get_table(table) if isinstance(table, str) else table
    if lr <= 0 or weight_decay < 0 or muon_lr_ratio <= 0:
        raise ConfigError(
            f"need lr > 0, weight_decay >= 0, muon_lr_ratio > 0; got {lr}, {weight_decay}, {muon_lr_ratio}"
        )
    if muon_cls is None:
        from telescope.optim.muon import Muon

        muon_cls = Muon
    groups = param_groups(model, table, lr, weight_decay, width, base_width, muon_lr_ratio, rules, depth)
    for group in groups["adamw"]:
        group["eps"] = recipe.adamw_eps * group["eps_factor"]
    optimizers: list[torch.optim.Optimizer] = []
    if groups["muon"]:
        optimizers.append(
            muon_cls(
                groups["muon"],
                lr=lr,
                momentum=recipe.muon_momentum,
                nesterov=recipe.muon_nesterov,
                ns_coefficients=NS_COEFFICIENTS,
                ns_steps=NS_STEPS,
                adjust_lr_fn=LR_ADJUST,
            )
        )
    if groups["adamw"]:
        optimizers.append(torch.optim.AdamW(groups["adamw"], lr=lr, betas=recipe.adamw_betas, eps=recipe.adamw_eps))
    return Optimizers(optimizers, recipe.grad_clip)
