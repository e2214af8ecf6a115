"""Packed trials: k proxies of one shape trained in one process as one batched model.

The k models are built exactly as k unpacked trials would build them (same seeds, same
init); their parameters are stacked along a new leading dimension and run through the
proxy's own forward under `torch.func.vmap`, so one op serves k trials. Muon
orthogonalises the matrices of all k trials in one batched Newton-Schulz chain and
AdamW updates each group with one op; every trial keeps its own learning rate, weight
decay and data order (`telescope.training.train.run_trials` keeps its metrics, divergence
check and result). Same math as `Optimizers` with `Muon` and `torch.optim.AdamW`,
within float rounding (tests/test_packed.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from telescope.models.packing import logits_of, vmap_quietly
from telescope.optim.groups import param_groups
from telescope.optim.muon import adjusted_lr, momentum_update, zeropower_via_newtonschulz5
from telescope.parametrization import LR_ADJUST, NS_COEFFICIENTS, NS_STEPS, Depth, Table
from telescope.proxy.model import build_model
from telescope.roles import PROXY_RULES, with_defaults
from telescope.spec import TrialSpec


class PackedProxies:
    """k proxies (or k of the user's models, when telescope.models.packing finds them
    batchable), one per spec (all with the same `pack_key`), with their optimizers."""

    def __init__(self, specs: Sequence[TrialSpec], table: Table, device: torch.device):
        first = specs[0]
        models = [_build(first, spec.seed, table) for spec in specs]
        rules = with_defaults(first.model_rules) if first.user_model else PROXY_RULES
        depth = _depth(models[0], first, rules)
        groups = [
            param_groups(m, table, s.lr, s.weight_decay, s.width, s.base_width, s.muon_lr_ratio, rules, depth)
            for m, s in zip(models, specs)
        ]
        stacked, _ = stack_module_state(models)
        self.params = {name: p.to(device).detach().requires_grad_() for name, p in stacked.items()}
        self.buffers = {name: b.to(device) for name, b in models[0].named_buffers()}
        self._template = _build(first, None, table)  # on meta: functional_call passes the stacked weights
        self.k = len(specs)
        self.recipe = first.train.recipe
        self.muon = [
            _packed_group(self.params, [g["muon"][i] for g in groups], device) for i in range(len(groups[0]["muon"]))
        ]
        self.adamw = [
            _packed_group(self.params, [g["adamw"][i] for g in groups], device) for i in range(len(groups[0]["adamw"]))
        ]
        self._state: dict[Tensor, dict[str, Tensor]] = {}
        self._steps = 0
        self._multiplier = 1.0

    def losses(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Each trial's mean cross-entropy, (k,). `inputs` is (B, T), shared by every
        trial, or (k, B, T), one batch per trial."""
        batched = 0 if inputs.ndim == 3 else None
        with vmap_quietly():
            return vmap(self._loss, in_dims=(0, batched, batched))(self.params, inputs, targets)

    def _loss(self, params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        logits = logits_of(functional_call(self._template, (params, self.buffers), (inputs,)))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def grad_norms(self) -> Tensor:
        """Each trial's total gradient norm (as torch.nn.utils.get_total_norm), (k,)."""
        norms = [p.grad.flatten(1).norm(dim=1) for p in self.params.values() if p.grad is not None]
        return torch.stack(norms).norm(dim=0)

    def set_lr_multiplier(self, multiplier: float) -> None:
        self._multiplier = multiplier

    @torch.no_grad()
    def step(self) -> None:
        self._steps += 1
        if self.recipe.grad_clip is not None:
            self._clip(self.recipe.grad_clip)
        for group in self.muon:
            self._muon_step(group)
        for group in self.adamw:
            self._adamw_step(group)

    def _clip(self, max_norm: float) -> None:
        """Each trial's gradients scaled down to at most `max_norm` in its own global norm
        (as torch.nn.utils.clip_grad_norm_ on the trial alone)."""
        coefficients = torch.clamp(max_norm / (self.grad_norms() + 1e-6), max=1.0)
        for p in self.params.values():
            if p.grad is not None:
                p.grad.mul_(coefficients.view((-1,) + (1,) * (p.ndim - 1)))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def train(self, mode: bool) -> None:
        self._template.train(mode)

    def _muon_step(self, group: dict) -> None:
        lr = group["peak_lr"] * self._multiplier
        decay = 1 - lr * group["weight_decay"]
        by_shape: dict[torch.Size, list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            by_shape[p.shape].append(p)
        for shape, params in by_shape.items():
            grads = [p.grad for p in params]
            bufs = [self._buffer(p, "momentum_buffer") for p in params]
            directions = torch.stack(momentum_update(grads, bufs, self.recipe.muon_momentum, self.recipe.muon_nesterov))
            # Every matrix of every trial (an expert bank's matrices each their own) in one chain.
            updates = zeropower_via_newtonschulz5(directions.flatten(0, -3), NS_COEFFICIENTS, NS_STEPS)
            per_trial = (-1,) + (1,) * (len(shape) - 1)
            scale = (lr * adjusted_lr(1.0, shape, LR_ADJUST)).view(per_trial)
            for p, update in zip(params, updates.view_as(directions).unbind(0)):
                if group["decays"]:
                    p.mul_(decay.view(per_trial))
                p.sub_(update * scale)

    def _adamw_step(self, group: dict) -> None:
        beta1, beta2 = self.recipe.adamw_betas
        lr = group["peak_lr"] * self._multiplier
        decay = 1 - lr * group["weight_decay"]
        step_size = lr / (1 - beta1**self._steps)
        bias_correction2_sqrt = math.sqrt(1 - beta2**self._steps)
        for p in group["params"]:
            per_trial = (-1,) + (1,) * (p.ndim - 1)
            exp_avg, exp_avg_sq = self._buffer(p, "exp_avg"), self._buffer(p, "exp_avg_sq")
            if group["decays"]:
                p.mul_(decay.view(per_trial))
            exp_avg.lerp_(p.grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.recipe.adamw_eps * group["eps_factor"])
            p.sub_(exp_avg / denom * step_size.view(per_trial))

    def _buffer(self, p: Tensor, name: str) -> Tensor:
        state = self._state.setdefault(p, {})
        if name not in state:
            state[name] = torch.zeros_like(p)
        return state[name]


def _build(spec: TrialSpec, seed: int | None, table: Table) -> torch.nn.Module:
    """One trial's model from `seed`, or (seed None) the template on the meta device."""
    if spec.user_model:
        from telescope.models.packing import build_trial_module

        return build_trial_module(spec, seed or 0, device="meta" if seed is None else None)
    if seed is None:
        with torch.device("meta"):
            return build_model(spec.model, spec.width, spec.base_width, table, base_depth=spec.base_depth)
    generator = torch.Generator().manual_seed(seed)
    return build_model(spec.model, spec.width, spec.base_width, table, generator, spec.base_depth)


def _depth(model: torch.nn.Module, spec: TrialSpec, rules) -> Depth:
    """The pack's place on the depth axis (the same for every trial of it)."""
    if not spec.user_model:
        return model.depth
    from telescope.models.foreign import user_depth

    return user_depth(model, rules, spec.model.depth_alpha, spec.base_depth)


def _packed_group(params: dict[str, Tensor], groups: Sequence[dict], device: torch.device) -> dict:
    """One group of the k trials' matching groups (same role and names): the stacked
    parameters with each trial's peak LR and weight decay as (k,) tensors."""
    return {
        "params": [params[name] for name in groups[0]["names"]],
        "peak_lr": torch.tensor([g["peak_lr"] for g in groups], dtype=torch.float32, device=device),
        "weight_decay": torch.tensor([g["weight_decay"] for g in groups], dtype=torch.float32, device=device),
        "decays": any(g["weight_decay"] for g in groups),  # else the multiply by 1 is skipped
        "eps_factor": groups[0]["eps_factor"],  # a depth factor: every trial of a pack has the same depth
    }
