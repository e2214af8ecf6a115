"""Muon with Newton-Schulz batched over same-shaped matrices; torch.optim.Muon's math.

A 3-D parameter (E, A, B), an MoE layer's expert bank, is E matrices: each gets its own
orthogonalised update and the LR adjustment of an (A, B) matrix.

The math is in pure functions (as in KellerJordan/Muon); the Optimizer class only groups
parameters by shape and applies the updates. Each step equals torch.optim.Muon's within
bf16 rounding (tests/test_muon.py), but the proxy's q/k/v/o and MLP matrices of all layers
are orthogonalised in one batched matmul chain instead of one chain per matrix.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor


def zeropower_via_newtonschulz5(
    G: Tensor,
    coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    steps: int = 5,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate orthogonalisation U V^T of each matrix in G (..., A, B), in bf16."""
    a, b, c = coefficients
    # On a CPU without bf16 matrix units a bf16 matmul is ~20x slower than a float32 one;
    # there every product runs in float32 on bf16 values and is rounded to bf16, which is
    # what a GPU's bf16 GEMM does (float32 accumulation, one rounding of the result).
    emulate = G.device.type == "cpu"
    rounded = _round_to_bf16 if emulate else _identity
    X = G.bfloat16()
    if emulate:
        X = X.float()
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    X = rounded(X / rounded(X.norm(dim=(-2, -1), keepdim=True)).clamp(min=eps))  # spectral norm <= 1
    batched = X.ndim == 3
    for _ in range(steps):
        gram = rounded(X @ X.mT)
        if batched:
            poly = rounded(torch.baddbmm(gram, gram, gram, beta=b, alpha=c))
            X = rounded(torch.baddbmm(X, poly, X, beta=a))
        else:
            poly = rounded(torch.addmm(gram, gram, gram, beta=b, alpha=c))
            X = rounded(torch.addmm(X, poly, X, beta=a))
    X = X.bfloat16()
    return X.mT if transposed else X


def _round_to_bf16(x: Tensor) -> Tensor:
    return x.bfloat16().float()


def _identity(x: Tensor) -> Tensor:
    return x


def momentum_update(grads: list[Tensor], bufs: list[Tensor], momentum: float, nesterov: bool) -> list[Tensor]:
    """Update the momentum buffers in place; return the (Nesterov) directions to orthogonalise."""
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    if not nesterov:
        return bufs
    return [g.lerp(b, momentum) for g, b in zip(grads, bufs)]


def adjusted_lr(lr: float, shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """torch.optim.Muon's LR adjustment: "match_rms_adamw" scales by 0.2 * sqrt(max(A, B)),
    for the (A, B) matrices of `shape` (the last two dims)."""
    A, B = shape[-2:]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, A / B))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(A, B))
    raise ValueError(f"unsupported adjust_lr_fn {adjust_lr_fn!r}")


class Muon(torch.optim.Optimizer):
    """Same arguments and per-group semantics as torch.optim.Muon (coupled weight decay:
    p <- p * (1 - lr * weight_decay) - adjusted_lr * NS(update))."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim not in (2, 3):
                    raise ValueError(f"Muon takes matrices or banks of them (E, A, B), got size {tuple(p.size())}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_shape: dict[torch.Size, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    by_shape[p.shape].append(p)
            for shape, params in by_shape.items():
                self._step_same_shape(group, shape, params)
        return loss

    def _step_same_shape(self, group: dict, shape: torch.Size, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            bufs.append(state["momentum_buffer"])
        directions = momentum_update(grads, bufs, group["momentum"], group["nesterov"])
        # Every matrix of every parameter of this shape in one batch: an (E, A, B) expert
        # bank is E matrices, each orthogonalised on its own.
        stacked = torch.stack(directions) if len(directions) > 1 or len(shape) == 3 else directions[0]
        ortho = zeropower_via_newtonschulz5(
            stacked.reshape(-1, *shape[-2:]) if len(shape) == 3 else stacked,
            group["ns_coefficients"],
            group["ns_steps"],
            group["eps"],
        ).reshape(stacked.shape)
        updates = list(ortho.unbind(0)) if stacked.ndim > len(shape) else [ortho]
        lr = group["lr"]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, updates, alpha=-adjusted_lr(lr, shape, group["adjust_lr_fn"]))
