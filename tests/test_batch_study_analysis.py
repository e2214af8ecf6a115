"""T_L, R_L, B_tok and the Pareto frontier of the batch-size study, on synthetic curves."""

from __future__ import annotations

import math

import pytest

from telescope.batch_study.analysis import (
    Spread,
    pareto_frontier,
    ratio,
    ratio_over_seeds,
    smoothed,
    token_optimal_batch,
    tokens_to_loss,
)


def power_law_curve(batch: int, rate: float, steps: int = 400):
    """Loss 1 + 4 / (1 + rate * tokens / 1000): reaches L at tokens = 1000 * (4 / (L - 1) - 1) / rate."""
    tokens = [batch * (s + 1) for s in range(steps)]
    return tokens, [1.0 + 4.0 / (1.0 + rate * t / 1000.0) for t in tokens]


def test_tokens_to_loss_interpolates_between_the_points_around_the_target():
    tokens, losses = [100, 200, 300, 400], [4.0, 3.0, 2.0, 1.0]
    assert tokens_to_loss(tokens, losses, 2.5, window=1) == pytest.approx(250.0)
    assert tokens_to_loss(tokens, losses, 4.0, window=1) == 100.0
    assert tokens_to_loss(tokens, losses, 0.5, window=1) == math.inf


def test_tokens_to_loss_recovers_the_analytic_value_of_a_smooth_curve():
    tokens, losses = power_law_curve(batch=64, rate=2.0, steps=2000)
    exact = 1000.0 * (4.0 / (2.0 - 1.0) - 1.0) / 2.0  # L = 2
    assert tokens_to_loss(tokens, losses, 2.0, window=1) == pytest.approx(exact, rel=0.01)


def test_smoothing_keeps_one_noisy_dip_from_counting_as_reaching_the_loss():
    tokens = list(range(1, 41))
    losses = [3.0] * 40
    losses[5] = 1.0  # one lucky batch
    assert tokens_to_loss(tokens, losses, 2.0, window=1) == pytest.approx(5.5)
    assert tokens_to_loss(tokens, losses, 2.0, window=10) == math.inf
    assert smoothed([1.0, math.nan, 3.0], window=2) == [1.0, math.inf, 2.0]


def test_ratio_of_a_faster_optimizer_is_above_one():
    muon = {b: tokens_to_loss(*power_law_curve(b, rate=1.25), 2.0, window=1) for b in (16, 32, 64)}
    adamw = {b: tokens_to_loss(*power_law_curve(b, rate=1.0), 2.0, window=1) for b in (16, 32, 64)}
    for b in muon:
        assert ratio(adamw[b], muon[b]) == pytest.approx(1.25, rel=0.02)
    assert ratio(math.inf, 100.0) == math.inf and math.isnan(ratio(100.0, math.inf))


def test_ratio_over_seeds_has_a_spread():
    spread = ratio_over_seeds([120.0, 130.0], [100.0, 100.0])
    assert spread.mean == pytest.approx(1.25) and spread.std == pytest.approx(0.0707, rel=0.01)
    assert ratio_over_seeds([120.0], [100.0]).std is None
    assert Spread.of([math.inf, 2.0]).mean == math.inf


def test_token_optimal_batch_is_the_largest_among_equal_minima():
    assert token_optimal_batch({8: 500.0, 16: 400.0, 32: 400.0, 64: 900.0}) == 32
    assert token_optimal_batch({8: 500.0, 16: 450.0, 32: 400.0, 64: 900.0}) == 32
    assert token_optimal_batch({8: math.inf, 16: math.inf}) is None


def test_pareto_frontier_keeps_only_points_no_other_beats():
    t = {8: 800.0, 16: 960.0, 32: 1600.0, 64: 6400.0, 128: 12800.0}  # time T/B: 100, 60, 50, 100, 100
    frontier = pareto_frontier(t, per_device=8)
    assert [(p.batch_size, p.devices, p.time) for p in frontier] == [(8, 1, 100.0), (16, 2, 60.0), (32, 4, 50.0)]
    assert [p.time for p in pareto_frontier(t, per_device=8, seq_len=10)] == [10.0, 6.0, 5.0]  # steps
    assert pareto_frontier({8: math.inf}, per_device=8) == []
    with pytest.raises(ValueError):
        pareto_frontier(t, per_device=0)
