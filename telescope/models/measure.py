"""The user's model measured without memory: built on the meta device at any width, its
exact parameter counts, its forward FLOPs per token (torch's FLOP counter over one
sequence) and its hidden matrices (Muon's Newton-Schulz work), for `telescope plan` and the
cost model."""

from __future__ import annotations

import functools

import torch
from torch import nn

from telescope.models import ModelSource, model_maker


def build_on_meta(source: ModelSource, width: int) -> nn.Module:
    """The user's model at `width` on the meta device (no weights in memory)."""
    from telescope.models.foreign import make_model

    if source.hf_config is not None:
        from telescope.models import hf

        return hf.build(source.hf_path, width, source.hf_config_hash, device="meta")
    maker, label = model_maker(source.factory, None)
    with torch.device("meta"):
        return make_model(maker, width, label)


@functools.cache
def measure(source: ModelSource, width: int, seq_len: int) -> tuple[int, int, float | None]:
    """(parameters, parameters outside the embedding and unembedding, forward FLOPs per
    token or None when the model's forward cannot run on the meta device, e.g. an MoE
    whose routing reads the values)."""
    from telescope.roles import classify, with_defaults

    model = build_on_meta(source, width)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(
        c.param.numel() for c in classify(model, with_defaults(source.rules)) if c.role in ("embedding", "output")
    )
    return total, total - embedding, _forward_flops_per_token(model, seq_len)


def train_flops(source: ModelSource, width: int, seq_len: int, tokens: int) -> float:
    """Training FLOPs of the user's model at `width` over `tokens` tokens: 3 x its forward
    FLOPs per token (2 x its parameters when the forward cannot run on the meta device)."""
    total, _, forward = measure(source, width, seq_len)
    return 3.0 * (forward if forward is not None else 2.0 * total) * tokens


@functools.cache
def hidden_matrices(source: ModelSource, width: int) -> tuple[tuple[int, int], ...]:
    """(rows, cols) of every hidden matrix of the user's model at `width`, the matrices Muon
    orthogonalises each step: an (E, A, B) expert bank is E matrices of A x B."""
    from telescope.roles import classify, with_defaults

    model = build_on_meta(source, width)
    out: list[tuple[int, int]] = []
    for c in classify(model, with_defaults(source.rules)):
        if c.role == "hidden" and len(c.shape) >= 2:
            out += [(c.shape[-2], c.shape[-1])] * (c.shape[0] if len(c.shape) == 3 else 1)
    return tuple(out)


def _forward_flops_per_token(model: nn.Module, seq_len: int) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    inputs = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(inputs)
    except Exception:  # noqa: BLE001 - data-dependent code (routing) has no meta forward
        return None
    return counter.get_total_flops() / seq_len
