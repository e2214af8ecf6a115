"""The remaining-time estimator on synthetic timings: the cost model's fit per number of
measured widths, and the range the last level's growth past its edges opens."""

import pytest

from telescope.remaining import PRIOR_FIXED_SHARE, Estimate, Growth, LevelWork, RemainingTime, TrialCost, fit_trial_cost

# The README's tiny sweep: widths 32, 64, 128 (training and Newton-Schulz FLOPs of one trial).
W32 = LevelWork(25, 33.3e9, 3.07e9)
W64 = LevelWork(9, 114.9e9, 24.5e9)
W128 = LevelWork(9, 423.0e9, 196.3e9)
TRUE = TrialCost(fixed=1.5, per_flop=2.5e-11, per_muon_flop=1.5e-11)  # seconds per trial


def test_one_width_keeps_the_prior_share_fixed_and_scales_the_rest_with_all_flops():
    cost = fit_trial_cost([(W32, 3.0)])
    assert cost(W32) == pytest.approx(3.0)
    assert cost.fixed == pytest.approx(PRIOR_FIXED_SHARE * 3.0)
    assert cost.per_flop == cost.per_muon_flop  # a Newton-Schulz FLOP costs as much as a training one
    flops = lambda w: w.flops + w.muon_flops  # noqa: E731
    growth = flops(W128) / flops(W32)
    assert cost(W128) == pytest.approx(3.0 * (PRIOR_FIXED_SHARE + (1 - PRIOR_FIXED_SHARE) * growth))


def test_two_widths_fit_fixed_time_and_one_rate_exactly():
    cost = fit_trial_cost([(W32, 2.5), (W64, 6.0)])
    assert cost(W32) == pytest.approx(2.5) and cost(W64) == pytest.approx(6.0)
    assert cost.per_flop == cost.per_muon_flop and cost.fixed > 0


def test_three_or_more_widths_recover_each_term():
    widths = [W32, W64, W128, LevelWork(9, 1.6e12, 1.5e12)]
    cost = fit_trial_cost([(w, TRUE(w)) for w in widths])
    assert cost.fixed == pytest.approx(TRUE.fixed, rel=1e-6)
    assert cost.per_flop == pytest.approx(TRUE.per_flop, rel=1e-6)
    assert cost.per_muon_flop == pytest.approx(TRUE.per_muon_flop, rel=1e-6)


def test_no_term_goes_negative_so_more_work_never_takes_less_time():
    # Wider levels relatively fast: an exact fit would need negative seconds per Newton-Schulz FLOP.
    cost = fit_trial_cost([(W32, 2.5), (W64, 6.0), (W128, 18.0)])
    assert min(cost.fixed, cost.per_flop, cost.per_muon_flop) >= 0
    for seconds, width in zip((2.5, 6.0, 18.0), (W32, W64, W128)):
        assert cost(width) == pytest.approx(seconds, rel=0.15)
    # Narrower trials measured slower than wider ones (a loaded machine): fixed time only.
    slower = fit_trial_cost([(W32, 9.0), (W64, 6.0)])
    assert (slower.per_flop, slower.per_muon_flop) == (0.0, 0.0) and 6.0 <= slower(W128) <= 9.0


def test_levels_of_one_width_are_one_point():
    assert fit_trial_cost([(W32, 2.0), (W32, 4.0)]) == fit_trial_cost([(W32, 3.0)])


def run(clock: RemainingTime, level: int, start: float, seconds_per_trial: float, end: bool = True) -> float:
    """The level's planned trials, one after another from `start`; returns when they are done."""
    lv = clock.levels[level]
    for _ in range(lv.trials - lv.done):
        clock.start_trial(level, start)
        start += seconds_per_trial
        clock.finish_trial(level, resumed=False)
    if end:
        clock.end(level, start)
    return start


def test_timings_that_follow_the_model_are_predicted_exactly_after_one_and_two_levels():
    planned = [W32, W64, W128]
    # One width: exact when the prior's fixed share is the truth (2.4 s here, at width 32).
    rate = (1 - PRIOR_FIXED_SHARE) * 2.4 / (W32.flops + W32.muon_flops)
    as_prior = TrialCost(PRIOR_FIXED_SHARE * 2.4, rate, rate)
    clock = RemainingTime.from_plan(planned, growth=Growth(7, 40 / 9))
    now = run(clock, 0, 0.0, as_prior(W32))
    assert clock.remaining(now).low == pytest.approx(9 * as_prior(W64) + 9 * as_prior(W128))
    # Two widths: exact for any fixed share, with one rate for both kinds of FLOPs.
    one_rate = TrialCost(0.4, 3e-11, 3e-11)
    clock = RemainingTime.from_plan(planned, growth=Growth(7, 40 / 9))
    now = run(clock, 1, run(clock, 0, 0.0, one_rate(W32)), one_rate(W64))
    low, high, expected = clock.remaining(now)
    assert low == pytest.approx(9 * one_rate(W128))
    assert high == pytest.approx(low + 7 * one_rate(W128))  # one step on both axes: 7 trials at width 128
    assert expected == pytest.approx(low + 40 / 9 * one_rate(W128))  # as a 3 x 3 grid grows on average


def test_the_prior_split_after_one_width():
    clock = RemainingTime.from_plan([LevelWork(4, 1e9), LevelWork(2, 5e9)])
    now = run(clock, 0, 0.0, 10.0)
    # 2 trials of 5x the FLOPs: the prior's fixed share of 10 s, and the rest 5x.
    assert clock.remaining(now) == Estimate(
        *3 * [pytest.approx(2 * 10.0 * (PRIOR_FIXED_SHARE + 5 * (1 - PRIOR_FIXED_SHARE)))]
    )


def test_the_range_stands_until_the_last_level_ends_and_grows_with_it():
    clock = RemainingTime.from_plan([LevelWork(4, 1e9), LevelWork(2, 1e9)], growth=Growth(3, 1.5))
    now = run(clock, 0, 0.0, 5.0)
    # 2 trials; 3 more if it grows along every axis, 1.5 on average
    assert clock.remaining(now) == (pytest.approx(10.0), pytest.approx(25.0), pytest.approx(17.5))
    now = run(clock, 1, now, 5.0, end=False)
    assert clock.remaining(now) == (0.0, pytest.approx(15.0), pytest.approx(7.5))  # its best may sit on an edge
    clock.extend(1, 3)  # it did: 3 more trials planned now, and maybe more after them
    assert clock.grew() == 1
    assert clock.remaining(now) == (pytest.approx(15.0), pytest.approx(30.0), pytest.approx(22.5))
    now = run(clock, 1, now, 5.0)
    assert clock.remaining(now) == (0.0, 0.0, 0.0)


def test_a_last_level_slower_than_the_model_says_prices_its_growth_at_its_own_rate():
    clock = RemainingTime.from_plan([LevelWork(2, 1e9), LevelWork(4, 1e9)], growth=Growth(2, 1.0))
    now = run(clock, 0, 0.0, 1.0)
    for _ in range(4):
        clock.start_trial(1, now)
    now += 20.0
    clock.finish_trial(1, resumed=False)  # 1 of 4 done after 20 s: 20 / (1 + 3/2) = 8 s per trial
    low, high, expected = clock.remaining(now)
    assert low == pytest.approx(8.0 * (3 - 1.5))
    assert high == pytest.approx(low + 2 * 8.0)
    assert expected == pytest.approx(low + 1 * 8.0)
