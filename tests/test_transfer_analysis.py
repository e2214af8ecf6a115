"""The transfer-check analysis on synthetic loss curves: locator, extension, seeds, verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telescope.errors import TelescopeError
from telescope.transfer_check import (
    SQRT2,
    Optimum,
    extend_line,
    grid_steps,
    locate_optimum,
    locate_seeds,
    lr_line,
    next_extension,
    verdict,
    verdict_from_optima,
)

CENTER = 3e-3


def bowl(lr_star: float, a: float = 0.05, c: float = 2.0):
    """L(lr) = a * (log_sqrt2(lr / lr*))^2 + c: a parabola in log lr with its minimum c at lr*."""
    return lambda lr: a * grid_steps(lr, lr_star) ** 2 + c


def losses(curve, lrs):
    return [curve(lr) for lr in lrs]


def locate_with_extensions(curve, lrs, max_extensions=3):
    """What the executor wiring does: run the line, extend while the optimum sits on an edge."""
    lrs = list(lrs)
    for done in range(max_extensions + 1):
        opt = locate_optimum(lrs, losses(curve, lrs))
        new = next_extension(lrs, opt, done, max_extensions=max_extensions)
        if not new:
            return opt, lrs
        lrs = sorted(lrs + list(new))
    raise AssertionError("next_extension did not honour max_extensions")


# --------------------------------------------------------------------------- the line


def test_lr_line_is_log_spaced_in_sqrt2_steps_around_the_default():
    line = lr_line(CENTER)
    assert len(line) == 7
    assert line[3] == pytest.approx(CENTER)
    assert np.allclose(np.diff(np.log(line)), math.log(SQRT2))


def test_lr_line_even_count_and_custom_step_stay_centred():
    line = lr_line(1e-2, points=4, step=2.0)
    assert line == pytest.approx((1e-2 / 2**1.5, 1e-2 / 2**0.5, 1e-2 * 2**0.5, 1e-2 * 2**1.5))


@pytest.mark.parametrize("kwargs", [{"center": 0.0}, {"center": -1e-3}, {"points": 2}, {"step": 1.0}, {"step": 0.5}])
def test_lr_line_rejects_bad_settings(kwargs):
    with pytest.raises(TelescopeError):
        lr_line(**{"center": CENTER, **kwargs})


# --------------------------------------------------------------------------- locator


@settings(max_examples=200, deadline=None)
@given(
    offset=st.floats(-2.49, 2.49),
    a=st.floats(1e-3, 10.0),
    c=st.floats(0.1, 10.0),
)
def test_parabolic_optimum_is_recovered_below_grid_resolution(offset, a, c):
    line = lr_line(CENTER)
    lr_star = CENTER * SQRT2**offset
    opt = locate_optimum(line, losses(bowl(lr_star, a, c), line))
    assert not opt.on_edge and opt.refined
    assert grid_steps(opt.lr, lr_star) == pytest.approx(0.0, abs=1e-6)
    assert opt.loss == pytest.approx(c, rel=1e-9, abs=1e-9)
    assert opt.grid_loss >= opt.loss


@settings(max_examples=100, deadline=None)
@given(offset=st.floats(-2.4, 2.4))
def test_asymmetric_curve_is_located_better_than_the_grid(offset):
    # Real LR curves rise faster on the high side (divergence) than on the low side.
    lr_star = CENTER * SQRT2**offset

    def curve(lr):
        d = grid_steps(lr, lr_star) * 0.5
        return 2.0 + 0.1 * (math.exp(d) - 1.0 - d)

    line = lr_line(CENTER)
    opt = locate_optimum(line, losses(curve, line))
    assert not opt.on_edge and opt.refined
    assert abs(grid_steps(opt.lr, lr_star)) < 0.1  # the grid alone is off by up to 0.5


def test_unsorted_input_gives_the_same_optimum():
    line = lr_line(CENTER)
    curve = bowl(CENTER * SQRT2**0.3)
    shuffled = [line[i] for i in (4, 0, 6, 2, 1, 5, 3)]
    assert locate_optimum(shuffled, losses(curve, shuffled)) == locate_optimum(line, losses(curve, line))


def test_flat_optimum_keeps_the_middle_grid_point():
    line = lr_line(CENTER, points=5)
    opt = locate_optimum(line, [2.5, 2.0, 2.0, 2.0, 2.5])
    assert opt.index == 2 and not opt.refined and not opt.on_edge
    assert opt.lr == pytest.approx(CENTER)


def test_diverged_points_count_as_infinite_loss_and_block_the_parabola():
    line = lr_line(CENTER, points=5)
    # Best grid point's upper neighbour diverged: no parabola through it, no extrapolation.
    opt = locate_optimum(line, [2.3, 2.1, 2.0, math.inf, math.nan])
    assert (opt.index, opt.refined, opt.edge) == (2, False, None)
    assert opt.lr == pytest.approx(line[2]) and opt.loss == 2.0


def test_every_point_diverged_means_no_optimum_and_extend_downwards():
    line = lr_line(CENTER, points=5)
    opt = locate_optimum(line, [math.inf, math.nan, math.inf, math.inf, math.inf])
    assert opt.diverged and opt.edge == "low" and opt.direction == "down"


@pytest.mark.parametrize(
    "lrs, values",
    [
        ([1e-3, 2e-3], [1.0, 2.0]),  # too short
        ([1e-3, 2e-3, 4e-3], [1.0, 2.0]),  # one loss missing
        ([1e-3, 1e-3, 4e-3], [1, 2, 3]),  # repeated lr
        ([0, 1, 2], [1, 2, 3]),  # non-positive lr
    ],
)
def test_locator_rejects_malformed_lines(lrs, values):
    with pytest.raises(TelescopeError):
        locate_optimum(lrs, values)


# --------------------------------------------------------------------------- edges and extension


@pytest.mark.parametrize("offset, edge, direction", [(4.2, "high", "up"), (-3.7, "low", "down")])
def test_optimum_past_the_edge_is_flagged_not_extrapolated(offset, edge, direction):
    line = lr_line(CENTER)
    opt = locate_optimum(line, losses(bowl(CENTER * SQRT2**offset), line))
    assert opt.edge == edge and opt.direction == direction and not opt.refined
    assert opt.lr == (line[-1] if edge == "high" else line[0])


def test_extend_line_continues_the_spacing_outward():
    line = lr_line(CENTER, points=5)
    assert extend_line(line, "up", 2) == pytest.approx((line[-1] * SQRT2, line[-1] * 2))
    assert extend_line(line, "down", 3) == pytest.approx((line[0] / SQRT2**3, line[0] / 2, line[0] / SQRT2))
    assert extend_line(line, "up", 1, step=3.0) == pytest.approx((line[-1] * 3,))
    with pytest.raises(TelescopeError):
        extend_line(line, "sideways", 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("offset", [4.3, -4.4])
def test_extensions_bracket_an_optimum_outside_the_line(offset):
    lr_star = CENTER * SQRT2**offset
    opt, lrs = locate_with_extensions(bowl(lr_star), lr_line(CENTER))
    assert not opt.on_edge and opt.refined
    assert grid_steps(opt.lr, lr_star) == pytest.approx(0.0, abs=1e-6)
    assert len(lrs) == 7 + 2  # one extension of two points was enough


def test_extensions_stop_at_the_cap_and_leave_the_optimum_unresolved():
    opt, lrs = locate_with_extensions(bowl(CENTER * SQRT2**20), lr_line(CENTER), max_extensions=2)
    assert opt.edge == "high" and len(lrs) == 7 + 2 * 2
    assert next_extension(lrs, opt, 2, max_extensions=2) == ()


# --------------------------------------------------------------------------- seeds


def test_seed_spread_is_measured_in_grid_steps():
    line = lr_line(CENTER)
    seed_offsets = [0.4, -0.2, 0.1]
    per_seed = [losses(bowl(CENTER * SQRT2**s), line) for s in seed_offsets]
    located = locate_seeds(line, per_seed)
    assert [grid_steps(o.lr, CENTER) for o in located.per_seed] == pytest.approx(seed_offsets, abs=1e-6)
    assert located.std_steps == pytest.approx(np.std(seed_offsets, ddof=1), abs=1e-6)
    # Equal-curvature parabolas average to a parabola centred on the mean offset.
    assert grid_steps(located.mean.lr, CENTER) == pytest.approx(np.mean(seed_offsets), abs=1e-6)


def test_a_point_where_one_seed_diverged_is_diverged_on_the_mean_curve():
    line = lr_line(CENTER, points=5)
    clean = [2.4, 2.1, 2.0, 2.05, 2.3]
    located = locate_seeds(line, [clean, clean[:3] + [math.nan, 2.3]])
    assert located.mean.index == 2 and not located.mean.refined  # neighbour is +inf on the mean
    assert located.per_seed[0].refined


def test_single_seed_has_no_spread():
    line = lr_line(CENTER)
    assert locate_seeds(line, [losses(bowl(CENTER), line)]).std_steps is None


# --------------------------------------------------------------------------- verdict


def test_stable_optimum_and_improving_loss_passes():
    v = verdict([64, 128, 256], [0.034, 0.034, 0.034 * SQRT2**0.5], [1.97, 1.85, 1.75])
    assert v.passed and v.label == "PASS"
    assert [r.optimum_steps for r in v.widths] == pytest.approx([0.0, 0.0, 0.5])
    assert [d.drift_per_doubling for d in v.doublings] == pytest.approx([0.0, 0.5])
    assert any("within 1" in r for r in v.reasons)


def test_drift_of_two_steps_per_doubling_fails():
    v = verdict([64, 128, 256], [0.01, 0.02, 0.04], [2.0, 1.9, 1.8])
    assert not v.passed
    assert [d.drift_per_doubling for d in v.doublings] == pytest.approx([2.0, 2.0])
    assert v.reasons == (
        "drift +2.00 steps per doubling between 64 and 128 exceeds 1",
        "drift +2.00 steps per doubling between 128 and 256 exceeds 1",
    )


def test_drift_is_normalised_per_doubling_for_non_adjacent_widths():
    # Two steps over 64 -> 256 is one step per doubling: exactly at the default threshold.
    v = verdict([64, 256], [0.01, 0.02], [2.0, 1.8])
    assert v.doublings[0].doublings == pytest.approx(2.0)
    assert v.doublings[0].drift_per_doubling == pytest.approx(1.0)
    assert v.passed
    assert not verdict([64, 256], [0.01, 0.02], [2.0, 1.8], threshold_steps=0.9).passed


def test_negative_drift_is_judged_by_its_size():
    v = verdict([64, 128], [0.04, 0.01], [2.0, 1.9])
    assert v.doublings[0].drift_per_doubling == pytest.approx(-4.0)
    assert not v.passed and "-4.00" in v.reasons[0]


def test_loss_not_improving_with_width_fails_with_that_reason():
    v = verdict([64, 128, 256], [0.03, 0.03, 0.03], [1.95, 1.88, 1.91])
    assert not v.passed
    assert v.reasons == ("loss at 256 (1.91) is not below loss at 128 (1.88)",)
    assert [d.wider_better for d in v.doublings] == [True, False]


def test_loss_reason_shows_enough_digits_to_tell_the_losses_apart():
    v = verdict([64, 128], [0.03, 0.03], [1.8812, 1.8814])
    assert v.reasons == ("loss at 128 (1.8814) is not below loss at 64 (1.8812)",)


def test_loss_tolerance_demands_a_margin():
    assert verdict([64, 128], [0.03, 0.03], [1.90, 1.89]).passed
    v = verdict([64, 128], [0.03, 0.03], [1.90, 1.89], loss_tolerance=0.02)
    assert not v.passed and v.reasons[0].endswith("by more than 0.02")


def test_unresolved_or_diverged_width_fails():
    v = verdict([64, 128], [0.03, 0.03], [1.9, 1.8], edges=[None, "high"])
    assert not v.passed and "width 128 is unresolved: still on the high edge" in v.reasons[0]
    assert v.width_rows()[1]["on_edge"] is True
    v = verdict([64, 128], [0.03, 0.03], [1.9, math.inf])
    assert not v.passed and v.reasons[0] == "every learning rate diverged at width 128: no optimum"


def test_seed_uncertainty_of_widths_and_paired_drift():
    seeds = [[0.03, 0.03 * SQRT2**0.5, 0.03 / SQRT2**0.5], [0.03 * SQRT2, 0.03 * SQRT2**1.5, 0.03 * SQRT2**0.5]]
    v = verdict([64, 128], [0.03, 0.03 * SQRT2], [1.9, 1.8], seed_optima=seeds)
    assert v.widths[0].seed_std_steps == pytest.approx(0.5)
    # Every seed drifted by exactly one step: the paired drift has no spread.
    assert v.doublings[0].drift_std == pytest.approx(0.0, abs=1e-12)
    # Unequal seed counts fall back to the two widths' spreads combined.
    v = verdict([64, 256], [0.03, 0.03], [1.9, 1.8], seed_optima=[seeds[0], seeds[1][:2]])
    assert v.doublings[0].drift_std == pytest.approx(math.hypot(0.5, 0.5 / math.sqrt(2)) / 2)
    assert verdict([64, 128], [0.03, 0.03], [1.9, 1.8]).doublings[0].drift_std is None


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (([64], [0.03], [1.9]), {}),
        (([64, 128], [0.03], [1.9, 1.8]), {}),
        (([128, 64], [0.03, 0.03], [1.9, 1.8]), {}),
        (([64, 128], [0.03, -1.0], [1.9, 1.8]), {}),
        (([64, 128], [0.03, 0.03], [1.9, 1.8]), {"threshold_steps": 0.0}),
        (([64, 128], [0.03, 0.03], [1.9, 1.8]), {"loss_tolerance": -0.1}),
        (([64, 128], [0.03, 0.03], [1.9, 1.8]), {"edges": [None]}),
    ],
)
def test_verdict_rejects_bad_input(args, kwargs):
    with pytest.raises(TelescopeError):
        verdict(*args, **kwargs)


# --------------------------------------------------------------------------- the whole analysis


def run_check(drift_steps_per_doubling, loss_by_width, widths=(64, 128, 256), seeds=1):
    """Synthetic transfer check: each width's optimum moves by a fixed number of steps."""
    located = []
    for i, w in enumerate(widths):
        lr_star = CENTER * SQRT2 ** (0.3 + drift_steps_per_doubling * math.log2(w / widths[0]))
        lrs = list(lr_line(CENTER))
        for done in range(4):
            curves = [bowl(lr_star * SQRT2 ** (0.1 * (k - (seeds - 1) / 2)), c=loss_by_width[i]) for k in range(seeds)]
            opt = locate_seeds(lrs, [losses(c, lrs) for c in curves])
            new = next_extension(lrs, opt.mean, done)
            if not new:
                break
            lrs = sorted(lrs + list(new))
        located.append(opt)
    return verdict_from_optima(list(widths), located)


def test_muP_like_world_passes_and_reports_the_table():
    v = run_check(0.25, [1.97, 1.85, 1.75], seeds=3)
    assert v.passed
    assert [r.optimum_steps for r in v.widths] == pytest.approx([0.0, 0.25, 0.5], abs=1e-6)
    # The seed-mean curve sits slightly above each seed's minimum (the seeds disagree a little).
    assert [r.best_loss for r in v.widths] == pytest.approx([1.97, 1.85, 1.75], abs=1e-3)
    assert all(r.seed_std_steps == pytest.approx(0.1) for r in v.widths)
    assert set(v.width_rows()[0]) == {
        "width",
        "optimum_lr",
        "optimum_steps",
        "best_loss",
        "edge",
        "seed_std_steps",
        "on_edge",
    }


def test_sp_like_world_fails_on_drift_even_after_extending_past_the_line():
    # Two steps per doubling puts the width-256 optimum 4.3 steps above the default: off the line.
    v = run_check(2.0, [1.97, 1.85, 1.75])
    assert not v.passed
    assert not any(r.on_edge for r in v.widths)  # the extensions found it
    assert [d.drift_per_doubling for d in v.doublings] == pytest.approx([2.0, 2.0], abs=1e-6)
    assert all("exceeds 1" in r for r in v.reasons)


def test_verdict_from_plain_optima_uses_their_edges():
    line = lr_line(CENTER)
    inside = locate_optimum(line, losses(bowl(CENTER, c=2.0), line))
    outside = locate_optimum(line, losses(bowl(CENTER * SQRT2**9, c=1.9), line))
    assert isinstance(outside, Optimum) and outside.edge == "high"
    v = verdict_from_optima([64, 128], [inside, outside])
    assert not v.passed and any("unresolved" in r for r in v.reasons)
