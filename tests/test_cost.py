"""Parameter counts, FLOPs and the sweep plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from muon_flops import muon_step_flops

from telescope.config import load_config
from telescope.cost import expected_extension_trials, forward_flops_per_token, param_counts, plan, train_flops
from telescope.spec import ModelShape

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PAPER = ModelShape(
    depth=34, head_dim=128, kv_ratio=2, mlp_ratio=4.0, vocab_size=128256, tied_embeddings=True, seq_len=8192
)


def test_param_counts_by_hand_for_a_small_model():
    shape = ModelShape(depth=2, head_dim=16, kv_ratio=2, mlp_ratio=4.0, vocab_size=256, tied_embeddings=False)
    d, h, kv = 64, 256, 32
    block = d + d * d + 2 * d * kv + d * d + 2 * 16 + d + 3 * d * h
    counts = param_counts(shape, d)
    assert counts.non_embedding == 2 * block + d
    assert counts.total == counts.non_embedding + 2 * 256 * d  # embedding + untied unembedding
    tied = param_counts(ModelShape(depth=2, head_dim=16, kv_ratio=2, tied_embeddings=True), d)
    assert tied.total == counts.total - 256 * d and tied.non_embedding == counts.non_embedding


def test_paper_target_is_the_3_67b_model():
    assert param_counts(PAPER, 2560).total == pytest.approx(3.67e9, rel=0.005)


def test_attention_flops_count_causal_pairs_exactly():
    # Brute force: query i sees keys 0..i; each (query, key) pair costs 2*d (QK^T) + 2*d (AV) per layer.
    shape = ModelShape(depth=3, head_dim=8, seq_len=10, vocab_size=50)
    d = 32
    pairs = sum(i + 1 for i in range(shape.seq_len))
    attention_per_token = shape.depth * 4 * d * pairs / shape.seq_len
    no_attention = forward_flops_per_token(shape, d) - attention_per_token
    matmul_params = shape.depth * (4 * d * d + 3 * d * 4 * d) + d * 50
    assert no_attention == pytest.approx(2 * matmul_params)


def test_train_flops_are_three_forwards_and_near_6nt_for_short_sequences():
    shape = ModelShape(depth=4, head_dim=64, seq_len=8, vocab_size=256)
    assert train_flops(shape, 512, 1000) == pytest.approx(3 * 1000 * forward_flops_per_token(shape, 512))
    n = param_counts(shape, 512).total - 256 * 512  # the embedding lookup is not a matmul
    assert train_flops(shape, 512, 1000) == pytest.approx(6 * n * 1000, rel=0.02)


def test_paper_plan_per_level_cost_is_roughly_constant():
    p = plan(load_config(EXAMPLES / "paper-3.7b.toml"))
    assert [lc.width for lc in p.levels] == [256, 512, 1024, 2048]
    assert [lc.grid for lc in p.levels] == ["8x8", "5x5", "3x3", "3x3"]
    assert p.tokens_per_trial == 20000 * 2**23
    first = [lc.flops_per_level for lc in p.levels[:3]]
    assert max(first) / min(first) < 1.1  # 64, 25 and 9 trials cost about the same
    # The last level runs the 3x3 minimum instead of the schedule's ~1x1: about 3x.
    assert 2 < p.levels[3].flops_per_level / p.levels[2].flops_per_level < 4
    assert p.target_params == param_counts(PAPER, 2560).total


def test_plan_totals_are_consistent():
    p = plan(load_config(EXAMPLES / "tiny-cpu.toml"))
    assert p.sweep_flops == pytest.approx(sum(lc.flops_per_level for lc in p.levels))
    assert p.sweep_trials == sum(lc.trials for lc in p.levels) == 25 + 9 + 9
    assert p.ratio == pytest.approx(p.sweep_flops / p.target_flops)
    assert p.brute_force_trials == 25
    assert p.saving == pytest.approx(25 * p.target_flops / p.sweep_flops)
    for lc in p.levels:
        assert lc.flops_per_level == pytest.approx(lc.trials * lc.flops_per_trial)
        assert lc.heads * 16 == lc.width


@pytest.mark.parametrize("parametrization", ["paper", "adamw"])
def test_newton_schulz_flops_are_what_a_muon_step_computes(parametrization):
    config = load_config(EXAMPLES / "tiny-cpu.toml")
    config = dataclasses.replace(config, parametrization=parametrization)
    p = plan(config)
    for lc in p.levels:
        assert lc.newton_schulz_flops_per_trial == pytest.approx(config.train.steps * muon_step_flops(config, lc.width))
    if parametrization == "paper":  # a small batch: a large share of the work at width 128
        assert 0.3 < p.levels[-1].newton_schulz_flops_per_trial / p.levels[-1].flops_per_trial < 0.6
    else:  # AdamW everywhere: no Newton-Schulz
        assert all(lc.newton_schulz_flops_per_trial == 0 for lc in p.levels)


def test_expected_extension_averages_where_the_best_may_sit_on_the_grid():
    # 3 x 3: 4 corners grow both axes (+7), 4 edge middles one (+3), the centre none.
    assert expected_extension_trials([3, 3]) == pytest.approx((4 * 7 + 4 * 3) / 9)
    assert expected_extension_trials([2, 3]) == pytest.approx(5.0)  # a 2-point axis always grows
    assert expected_extension_trials([1, 5]) == pytest.approx(2 / 5)  # a single value never does
    p = plan(load_config(Path(__file__).parent.parent / "examples" / "tiny-cpu.toml"))
    assert (p.extension_trials_per_step, p.expected_extension_trials) == (7, pytest.approx(40 / 9))
