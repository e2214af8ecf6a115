"""Small LMs that are not telescope's proxy, for `--model tests.foreign_models:...` style
factories (importable as `foreign_models:factory` with tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 256
HEAD_DIM = 16


class EncoderLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, VOCAB): nn.TransformerEncoder with a causal mask."""

    def __init__(self, width: int, depth: int = 1):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        layer = nn.TransformerEncoderLayer(
            width,
            nhead=max(1, width // HEAD_DIM),
            dim_feedforward=2 * width,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        x = self.blocks(self.embed(idx), mask=mask, is_causal=True)
        return self.lm_head(self.norm(x))


class WithExpertBank(EncoderLM):
    """A 4-D parameter no default rule covers (a 3-D bank of expert matrices is covered)."""

    def __init__(self, width: int):
        super().__init__(width)
        self.experts = nn.Parameter(torch.zeros(2, 2, width, width))


class TiedNoHead(nn.Module):
    """Logits from the embedding matrix itself: no module computes them, no unembedding found."""

    def __init__(self, width: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(VOCAB, width))
        self.mix = nn.Linear(width, width, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.mix(self.tokens[idx]) @ self.tokens.T


def encoder_lm(width: int) -> nn.Module:
    return EncoderLM(width)


def with_expert_bank(width: int) -> nn.Module:
    return WithExpertBank(width)


def tied_no_head(width: int) -> nn.Module:
    return TiedNoHead(width)


def not_a_module(width: int) -> dict:
    return {"width": width}


class DecoderLM(EncoderLM):
    """The unembedding under a name no default rule knows: `decoder`."""

    def __init__(self, width: int):
        super().__init__(width)
        self.decoder = self.lm_head
        del self.lm_head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        return self.decoder(self.norm(self.blocks(self.embed(idx), mask=mask, is_causal=True)))


def decoder_lm(width: int) -> nn.Module:
    return DecoderLM(width)


def raising(width: int) -> nn.Module:
    raise RuntimeError(f"cannot build width {width}")


class BrokenForward(EncoderLM):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"forward() takes a dict of inputs, got a {type(idx).__name__}")


def broken_forward(width: int) -> nn.Module:
    return BrokenForward(width)


class SmallVocab(EncoderLM):
    """Logits over 100 tokens: fewer than the byte data's 256."""

    def __init__(self, width: int):
        super().__init__(width)
        self.embed, self.lm_head = nn.Embedding(100, width), nn.Linear(width, 100, bias=False)


def small_vocab(width: int) -> nn.Module:
    return SmallVocab(width)


class WidthScaledLogits(EncoderLM):
    """Logits multiplied by the width: not muP, so the coord check fails."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return super().forward(idx) * self.embed.embedding_dim


def width_scaled_logits(width: int) -> nn.Module:
    return WidthScaledLogits(width)


class ResidualBlock(nn.Module):
    """x + mlp(norm(x)): one residual branch, `mlp`."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width, bias=False), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class ResidualLM(nn.Module):
    """Embedding, `depth` residual MLP blocks in an nn.ModuleList, norm, unembedding."""

    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def residual_lm(width: int) -> nn.Module:
    return ResidualLM(width)


class FlatLM(ResidualLM):
    """ResidualLM's two blocks as plain attributes: no nn.ModuleList to find them by."""

    def __init__(self, width: int):
        super().__init__(width)
        self.first, self.second = self.layers
        del self.layers

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.second(self.first(self.embed(idx)))))


def flat_lm(width: int) -> nn.Module:
    return FlatLM(width)
