"""What a sweep costs before it runs: exact parameter counts, training FLOPs, the plan.

The proxy family (docs/design.md §3): token embedding vocab x d; per block an RMSNorm gain (d),
q (d x d), k and v (d x d/kv_ratio each), o (d x d), QK-norm gains (head_dim each for q
and k), an RMSNorm gain (d), a gated MLP of three d x h matrices (h = mlp_ratio * d);
a final RMSNorm gain (d); the unembedding d x vocab unless tied. No biases.

FLOPs count every matrix multiply, 2 per multiply-add: the block projections, the
unembedding (also when tied) and both attention products (QK^T and AV), where a causal
query at position i sees i + 1 keys. Norms, rotary, softmax and the embedding lookup
are not matmuls and are left out. Training = forward + backward = 3 x forward.

Muon's Newton-Schulz iterations are counted apart (`newton_schulz_flops`): every optimizer
step orthogonalises every hidden matrix, NS_STEPS iterations of three matrix products,
whatever the batch, so on a small proxy with a small batch they add up to half the
training FLOPs at width 128. The plan's FLOPs leave them out (they are the optimizer's,
not the model's); the live view's time estimate counts them (telescope.remaining).

A sweep of the user's own model (`[model] factory` or `hf_config`) is costed from that
model itself, built on the meta device at each width (telescope.models.measure): its
exact parameter count, and its forward FLOPs per token as torch's FLOP counter sees one
sequence (2 x parameters when its forward cannot run on the meta device, e.g. an MoE).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from telescope.parametrization import NS_STEPS, get_table
from telescope.spec import ModelShape

if TYPE_CHECKING:
    from telescope.config import SweepConfig


@dataclass(frozen=True)
class ParamCounts:
    total: int
    non_embedding: int  # without the embedding and (untied) unembedding matrices


def mlp_hidden(shape: ModelShape, width: int) -> int:
    return round(shape.mlp_ratio * width)


def _block_matmul_params(shape: ModelShape, width: int) -> int:
    d, h = width, mlp_hidden(shape, width)
    kv = d // shape.kv_ratio
    return d * d + 2 * d * kv + d * d + 3 * d * h  # q, k, v, o, gated MLP


def param_counts(shape: ModelShape, width: int) -> ParamCounts:
    """Exact parameter counts of the proxy at `width`."""
    d = width
    block = _block_matmul_params(shape, d) + 2 * d + 2 * shape.head_dim  # + norm gains, QK-norm gains
    embedding = shape.vocab_size * d * (1 if shape.tied_embeddings else 2)
    non_embedding = shape.depth * block + d  # + final norm
    return ParamCounts(total=non_embedding + embedding, non_embedding=non_embedding)


def forward_flops_per_token(shape: ModelShape, width: int) -> float:
    """Matmul FLOPs of one forward pass, per token, averaged over a full causal sequence."""
    d = width
    projections = 2 * shape.depth * _block_matmul_params(shape, d)
    unembedding = 2 * d * shape.vocab_size
    # QK^T and AV: 2 products x 2 FLOPs x d per (query, key) pair; T(T+1)/2 causal pairs.
    attention = shape.depth * 2 * d * (shape.seq_len + 1)
    return float(projections + unembedding + attention)


def train_flops(shape: ModelShape, width: int, tokens: int) -> float:
    """Training FLOPs (forward + backward = 3x forward) for `tokens` tokens at `width`."""
    return 3.0 * forward_flops_per_token(shape, width) * tokens


def newton_schulz_flops_per_matrix(rows: int, cols: int, iterations: int = NS_STEPS) -> float:
    """One orthogonalisation of a rows x cols matrix (m x n, m <= n after transposing):
    per iteration X X^T (2 m^2 n), the polynomial's square (2 m^3) and its product with X
    (2 m^2 n)."""
    m, n = sorted((rows, cols))
    return float(iterations * (4 * m * m * n + 2 * m**3))


def newton_schulz_flops(shape: ModelShape, width: int, steps: int) -> float:
    """Newton-Schulz FLOPs of Muon over `steps` optimizer steps of the proxy at `width`:
    q, k, v, o and the three MLP matrices of every block."""
    d, h = width, mlp_hidden(shape, width)
    kv = d // shape.kv_ratio
    ns = newton_schulz_flops_per_matrix
    return steps * shape.depth * (2 * ns(d, d) + 2 * ns(kv, d) + 3 * ns(h, d))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LevelCost:
    level: int
    width: int
    heads: int | None  # None: a user's model built by a factory (its heads are its own)
    params: int
    non_embedding_params: int
    grid: str  # e.g. "8x8"
    trials: int  # grid points x seeds
    flops_per_trial: float
    flops_per_level: float
    newton_schulz_flops_per_trial: float = 0.0  # Muon's, apart from the training FLOPs


@dataclass(frozen=True)
class Plan:
    name: str | None
    tokens_per_trial: int
    levels: tuple[LevelCost, ...]
    sweep_flops: float
    sweep_trials: int
    target_width: int
    target_params: int
    target_non_embedding_params: int
    target_flops: float  # one training run of the target model, same tokens
    ratio: float  # sweep_flops / target_flops
    brute_force_trials: int  # the level-0 grid (x seeds) run at the target width
    brute_force_flops: float
    saving: float  # brute_force_flops / sweep_flops
    # Possible extra cost: when the last level's best sits on its sub-grid's corner, each step
    # of its edge extension adds this many trials (one more line per swept axis) at its width;
    # on average, with the best equally likely in any cell, one step adds the expected count.
    extension_trials_per_step: int = 0
    extension_flops_per_step: float = 0.0
    expected_extension_trials: float = 0.0
    # With [depths]: the proxies' and the target's depth, and the same sweep with proxies of
    # the target's depth (what the shallow proxies save: full_depth_sweep_flops / sweep_flops).
    proxy_depth: int | None = None
    target_depth: int | None = None
    full_depth_sweep_flops: float | None = None
    depth_saving: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan(config: SweepConfig) -> Plan:
    """Cost of every level of the sweep and the totals, from the config alone."""
    shape, train = config.model, config.train
    tokens = train.steps * train.batch_size * shape.seq_len
    costs = _user_model_costs(config, tokens) if config.user_model else _proxy_costs(config, tokens)
    muon = get_table(config.parametrization).hidden.optimizer == "muon"
    levels = []
    for lp in config.levels():
        counts, per_trial, heads = costs(lp.width)
        ns = _newton_schulz_costs(config, lp.width) if muon else 0.0
        levels.append(
            LevelCost(
                level=lp.level,
                width=lp.width,
                heads=heads,
                params=counts.total,
                non_embedding_params=counts.non_embedding,
                grid=lp.shape,
                trials=lp.trials,
                flops_per_trial=per_trial,
                flops_per_level=per_trial * lp.trials,
                newton_schulz_flops_per_trial=ns,
            )
        )
    sweep = sum(lc.flops_per_level for lc in levels)
    target = config.widths.target
    depths: dict[str, Any] = {}
    if config.depths is not None:
        deep = _proxy_costs(
            dataclasses.replace(config, model=dataclasses.replace(shape, depth=config.depths.target)), tokens
        )
        full = sum(deep(lc.width)[1] * lc.trials for lc in levels)
        depths = dict(proxy_depth=config.depths.proxy, target_depth=config.depths.target)
        depths |= dict(full_depth_sweep_flops=full, depth_saving=full / sweep)
        costs = deep  # the target run and the brute-force grid are at the target's depth
    target_counts, target_flops, _ = costs(target)
    brute_trials = math.prod(a.points for a in config.search.axes) * config.seeds.per_point
    last = config.levels()[-1]
    extension = (math.prod(n + 1 for n in last.counts) - math.prod(last.counts)) * last.seeds
    expected_extension = expected_extension_trials(last.counts) * last.seeds
    return Plan(
        name=config.name,
        tokens_per_trial=tokens,
        levels=tuple(levels),
        sweep_flops=sweep,
        sweep_trials=sum(lc.trials for lc in levels),
        target_width=target,
        target_params=target_counts.total,
        target_non_embedding_params=target_counts.non_embedding,
        target_flops=target_flops,
        ratio=sweep / target_flops,
        brute_force_trials=brute_trials,
        brute_force_flops=brute_trials * target_flops,
        saving=brute_trials * target_flops / sweep,
        extension_trials_per_step=extension,
        extension_flops_per_step=extension * levels[-1].flops_per_trial,
        expected_extension_trials=expected_extension,
        **depths,
    )


def expected_extension_trials(counts: Sequence[int]) -> float:
    """Points one step of edge extension adds to a grid of `counts` points per axis, on
    average over where its best sits, each cell equally likely: an axis of n > 1 points grows
    by one line when the best is at either end, with probability 2 / n (search.extended_grid)."""
    expected = 0.0
    for grows in itertools.product((False, True), repeat=len(counts)):
        chance = math.prod((2 / n if g else 1 - 2 / n) if n > 1 else float(not g) for n, g in zip(counts, grows))
        expected += chance * (math.prod(n + g for n, g in zip(counts, grows)) - math.prod(counts))
    return expected


Costs = Callable[[int], tuple[ParamCounts, float, int | None]]  # width -> (counts, FLOPs per trial, heads)


def _proxy_costs(config: SweepConfig, tokens: int) -> Costs:
    shape = config.model
    return lambda width: (param_counts(shape, width), train_flops(shape, width, tokens), width // shape.head_dim)


def _newton_schulz_costs(config: SweepConfig, width: int) -> float:
    """Newton-Schulz FLOPs of one trial at `width`: the proxy's, or those of the hidden
    matrices of the user's model (an expert bank is one matrix per expert)."""
    if not config.user_model:
        return newton_schulz_flops(config.model, width, config.train.steps)
    from telescope.models.measure import hidden_matrices

    per_step = sum(newton_schulz_flops_per_matrix(rows, cols) for rows, cols in hidden_matrices(config.source, width))
    return config.train.steps * per_step


def _user_model_costs(config: SweepConfig, tokens: int) -> Costs:
    from telescope.models.measure import measure
    from telescope.models.measure import train_flops as model_train_flops

    head_dim = None
    if config.source.hf_config is not None:
        from telescope.models import hf

        head_dim = hf.head_dim(hf.read_config(config.source.hf_config))

    def costs(width: int) -> tuple[ParamCounts, float, int | None]:
        total, non_embedding, _ = measure(config.source, width, config.model.seq_len)
        flops = model_train_flops(config.source, width, config.model.seq_len, tokens)
        return ParamCounts(total, non_embedding), flops, head_dim and width // head_dim

    return costs
