"""The proxy: a small decoder-only transformer whose width scaling follows a muP table.

Built bottom-up like nanoGPT: norm -> rotary -> attention -> MLP -> block -> model.
Pre-norm RMSNorm, QK-norm, rotary embeddings, gated MLP, no biases, fixed head_dim with
heads = width / head_dim, grouped KV heads, optional tied embeddings. The table's forward
multipliers live inside the modules, so `forward` returns the real logits; so does the
depth rule's branch multiplier (L_base / L)^alpha on every attention and MLP output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telescope.errors import ConfigError
from telescope.parametrization import Depth, Table, check_depth_alpha, get_table, width_multiplier
from telescope.roles import PROXY_RULES, ParamRole, classify
from telescope.spec import ModelShape

ROPE_BASE = 10_000.0


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight.to(x.dtype))  # same dtype: the fused kernel


class Linear(nn.Linear):
    """A bias-free linear layer whose output is scaled by a fixed forward multiplier."""

    def __init__(self, in_features: int, out_features: int, multiplier: float = 1.0):
        super().__init__(in_features, out_features, bias=False)
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight)
        return y if self.multiplier == 1.0 else y * self.multiplier


class Embedding(nn.Embedding):
    def __init__(self, num_embeddings: int, dim: int, multiplier: float = 1.0):
        super().__init__(num_embeddings, dim)
        self.multiplier = multiplier

    def forward(self, idx: Tensor) -> Tensor:
        y = super().forward(idx)
        return y if self.multiplier == 1.0 else y * self.multiplier


def rotary_tables(seq_len: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """cos and sin of shape (seq_len, head_dim // 2) for rotary position embeddings."""
    freqs = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x1, x2) of the two halves of the last dim; x is (B, T, heads, head_dim)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, width: int, head_dim: int, kv_ratio: int, multiplier: float):
        super().__init__()
        self.head_dim = head_dim
        self.n_head = width // head_dim
        self.n_kv_head = self.n_head // kv_ratio
        self.q = Linear(width, self.n_head * head_dim, multiplier)
        self.k = Linear(width, self.n_kv_head * head_dim, multiplier)
        self.v = Linear(width, self.n_kv_head * head_dim, multiplier)
        self.o = Linear(self.n_head * head_dim, width, multiplier)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q(x).view(B, T, self.n_head, self.head_dim))
        k = self.k_norm(self.k(x).view(B, T, self.n_kv_head, self.head_dim))
        v = self.v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """Gated MLP (SwiGLU): down(silu(gate(x)) * up(x))."""

    def __init__(self, width: int, hidden: int, multiplier: float):
        super().__init__()
        self.gate = Linear(width, hidden, multiplier)
        self.up = Linear(width, hidden, multiplier)
        self.down = Linear(hidden, width, multiplier)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm attention then MLP, each residual branch scaled by `branch` (the depth rule's
    multiplier; 1 when it is off)."""

    def __init__(self, width: int, shape: ModelShape, multiplier: float, branch: float = 1.0):
        super().__init__()
        self.branch = branch
        self.attn_norm = RMSNorm(width)
        self.attn = Attention(width, shape.head_dim, shape.kv_ratio, multiplier)
        self.mlp_norm = RMSNorm(width)
        self.mlp = MLP(width, round(shape.mlp_ratio * width), multiplier)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self._scaled(self.attn(self.attn_norm(x), cos, sin))
        return x + self._scaled(self.mlp(self.mlp_norm(x)))

    def _scaled(self, y: Tensor) -> Tensor:
        return y if self.branch == 1.0 else y * self.branch


class Transformer(nn.Module):
    def __init__(self, shape: ModelShape, width: int, base_width: int, table: Table, base_depth: int | None = None):
        super().__init__()
        self.shape, self.width, self.base_width, self.table = shape, width, base_width, table
        self.depth = Depth(shape.depth, base_depth or shape.depth, shape.depth_alpha)
        m = width_multiplier(width, base_width)
        branch = table.branch_multiplier(self.depth)
        self.embed = Embedding(shape.vocab_size, width, table.embedding.multiplier(m))
        self.blocks = nn.ModuleList(Block(width, shape, table.hidden.multiplier(m), branch) for _ in range(shape.depth))
        self.norm = RMSNorm(width)
        self.lm_head = Linear(width, shape.vocab_size, table.output.multiplier(m))
        if shape.tied_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rotary_tables(shape.seq_len, shape.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> logits (B, T, vocab), output multiplier applied."""
        T = idx.size(1)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))


def init_weights(model: Transformer, generator: torch.Generator | None = None) -> None:
    """Initialise every parameter as the model's table says (m = width / base_width), with
    telescope.weights, the same code that initialises a user's model:

    - embed.weight (embedding): normal, std = table.embedding.init (constant 1.0 in all
      shipped tables); a tied lm_head shares it.
    - blocks.*.attn.{q,k,v,o}.weight, blocks.*.mlp.{gate,up,down}.weight (hidden): normal,
      std = 1/sqrt(fan_in) in all shipped tables (fan_in = width, or mlp hidden for down).
    - lm_head.weight (output): zero in the muP tables; normal 1/sqrt(width) in `sp`.
    - every *norm.weight (vector): ones.
    """
    from telescope.weights import init_parameters

    init_parameters(classify(model, PROXY_RULES), model.table, model.width, model.base_width, generator)


def parameter_roles(shape: ModelShape, width: int, base_width: int, table: str | Table = "paper") -> list[ParamRole]:
    """The proxy's parameters at `width`, classified, without allocating them (meta device)."""
    with torch.device("meta"):
        return classify(build_model(shape, width, base_width, table), PROXY_RULES)


def check_shape(shape: ModelShape, width: int) -> None:
    """ConfigError naming the field when the proxy cannot be built at this width."""
    if shape.depth < 1:
        raise ConfigError(f"model.depth must be >= 1, got {shape.depth}")
    if shape.head_dim < 2 or shape.head_dim % 2:
        raise ConfigError(f"model.head_dim must be a positive even number, got {shape.head_dim}")
    if width < shape.head_dim or width % shape.head_dim:
        raise ConfigError(f"width {width} is not a multiple of model.head_dim {shape.head_dim}")
    heads = width // shape.head_dim
    if shape.kv_ratio < 1 or heads % shape.kv_ratio:
        raise ConfigError(f"model.kv_ratio {shape.kv_ratio} does not divide the {heads} heads of width {width}")
    if shape.vocab_size < 2 or shape.seq_len < 1 or shape.mlp_ratio <= 0:
        raise ConfigError("model.vocab_size, model.seq_len and model.mlp_ratio must be positive")
    check_depth_alpha(shape.depth_alpha)


def build_model(
    shape: ModelShape,
    width: int,
    base_width: int,
    table: str | Table = "paper",
    generator: torch.Generator | None = None,
    base_depth: int | None = None,
) -> Transformer:
    """The proxy at `width`, initialised per `table` (on the current default device), its
    residual branches scaled by the depth rule for `shape.depth` blocks against `base_depth`
    (default: its own depth, so by 1)."""
    check_shape(shape, width)
    if base_depth is not None and base_depth < 1:
        raise ConfigError(f"base depth must be >= 1, got {base_depth}")
    table = get_table(table) if isinstance(table, str) else table
    model = Transformer(shape, width, base_width, table, base_depth)
    if model.embed.weight.device.type != "meta":
        init_weights(model, generator)
    return model
