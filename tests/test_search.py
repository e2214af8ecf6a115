"""The telescoping search core: grids, narrowing, edge rule, seeds, drift fit."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telescope.search import (
    Axis,
    Best,
    Narrowing,
    NoUsableResults,
    Outcome,
    Widths,
    best_point,
    extended_grid,
    fit_drift,
    initial_grid,
    level_counts,
    next_grid,
    plan_levels,
    significantly_better,
)
from telescope.spec import Status

LR = Axis("lr", 0.001, 0.256, 9)  # spacing exactly 2x
WD = Axis("weight_decay", 0.01, 0.16, 5)


def _results(grid, loss_fn, status_fn=lambda p: Status.COMPLETED):
    return [Outcome(p, loss_fn(p), status_fn(p)) for p in grid.points()]


def _bowl(centre: dict[str, float]):
    return lambda p: sum((math.log(p[k]) - math.log(v)) ** 2 for k, v in centre.items())


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


# --------------------------------------------------------------------------- examples


def test_paper_count_schedule_8_5_3_3():
    axes = [Axis("lr", 1e-3, 1.0, 8), Axis("weight_decay", 1e-3, 1.0, 8)]
    counts = [level_counts(axes, Narrowing(), level) for level in range(4)]
    assert counts == [(8, 8), (5, 5), (3, 3), (3, 3)]
    # Without odd rounding the same shrink gives 8 -> 4 -> 3 (min) -> 3.
    even = [level_counts(axes, Narrowing(odd=False), level)[0] for level in range(4)]
    assert even == [8, 4, 3, 3]


def test_auto_shrink_is_4_to_the_minus_one_over_k():
    assert Narrowing().shrink_factor(2) == pytest.approx(0.5)
    assert Narrowing().shrink_factor(3) == pytest.approx(4 ** (-1 / 3))
    assert Narrowing(shrink=0.8).shrink_factor(2) == 0.8


def test_initial_grid_is_log_spaced_and_hits_both_ends():
    g = initial_grid([LR, WD], width=64)
    assert g.shape == "9x5" and g.size == 45 and len(g.points()) == 45
    lr = g.axis("lr").values
    assert lr[0] == LR.lo and lr[-1] == LR.hi
    assert all(_close(b / a, 2.0) for a, b in zip(lr, lr[1:]))
    assert g.points()[0] == {"lr": LR.lo, "weight_decay": WD.lo}  # first axis slowest


def test_next_grid_centres_on_best_halves_spacing_and_doubles_width():
    g0 = initial_grid([LR, WD], width=32)
    best = {"lr": g0.axis("lr").values[4], "weight_decay": g0.axis("weight_decay").values[2]}
    g1 = next_grid(g0, _results(g0, _bowl(best)), [LR, WD], Narrowing())
    values = g1.axis("lr").values
    assert g1.level == 1 and g1.width == 64
    assert g1.shape == "5x3"  # 9 * 0.5 = 4.5 -> 5 (odd), 5 * 0.5 = 2.5 -> 3
    assert _close(values[2], best["lr"])
    assert all(_close(b / a, math.sqrt(2)) for a, b in zip(values, values[1:]))
    assert g1.axis("lr").spacing_rule == "halved" and not g1.warnings


def test_edge_rule_keeps_or_widens_spacing_and_warns():
    g0 = initial_grid([LR], width=32)
    g1 = next_grid(g0, _results(g0, _bowl({"lr": 0.016})), [LR], Narrowing())
    top = g1.axis("lr").values[-1]
    for rule, factor in (("keep", 1.0), ("widen", 2.0)):
        g2 = next_grid(g1, _results(g1, _bowl({"lr": top * 3})), [LR], Narrowing(edge_rule=rule))
        assert _close(g2.axis("lr").log_spacing, g1.axis("lr").log_spacing * factor)
        assert g2.axis("lr").edge_rule_fired
        assert any("edge of its sub-grid" in w for w in g2.warnings)
        assert top in g2.axis("lr").values


def test_best_on_initial_range_edge_warns_to_widen_the_range():
    g0 = initial_grid([LR, WD], width=32)
    g1 = next_grid(g0, _results(g0, _bowl({"lr": 10.0, "weight_decay": 0.04})), [LR, WD], Narrowing())
    assert any("search.lr.hi" in w and "widen the range" in w for w in g1.warnings)
    lr = g1.axis("lr").values
    # Shifted inward rather than dropping points: full count, still ending at hi.
    assert len(lr) == level_counts([LR, WD], Narrowing(), 1)[0] and lr[-1] == LR.hi


def test_diverged_counts_as_infinite_and_failed_is_excluded():
    g0 = initial_grid([LR], width=32)
    vals = g0.axis("lr").values
    results = [
        Outcome({"lr": vals[0]}, 0.1, Status.DIVERGED),  # loss reported but diverged: +inf
        Outcome({"lr": vals[1]}, 0.01, Status.FAILED),  # failed: excluded
        Outcome({"lr": vals[2]}, float("nan"), "completed"),  # NaN counts as +inf
        Outcome({"lr": vals[3]}, 2.0, "completed"),
        (({"lr": vals[4]}), 3.0, "completed"),  # plain tuples work too
    ]
    assert best_point(g0, results).point == {"lr": vals[3]}


def test_all_diverged_or_failed_is_a_clear_error():
    g0 = initial_grid([LR], width=32)
    results = _results(g0, lambda p: 1.0, lambda p: Status.DIVERGED if p["lr"] > 0.01 else Status.FAILED)
    with pytest.raises(NoUsableResults, match="every trial diverged or failed"):
        best_point(g0, results)


def test_ties_go_to_the_point_nearest_the_centre_then_smallest():
    g0 = initial_grid([LR], width=32)
    v = g0.axis("lr").values
    flat = _results(g0, lambda p: 1.0)
    assert best_point(g0, flat).point == {"lr": v[4]}
    two = _results(g0, lambda p: 0.5 if p["lr"] in (v[3], v[5]) else 1.0)
    assert best_point(g0, two).point == {"lr": v[3]}
    assert best_point(g0, list(reversed(two))).point == {"lr": v[3]}  # order does not matter


def test_seeds_are_averaged():
    g0 = initial_grid([LR], width=32)
    v = g0.axis("lr").values
    results = [
        Outcome({"lr": v[0]}, 1.0, "completed"),
        Outcome({"lr": v[0]}, 3.0, "completed"),  # mean 2.0
        Outcome({"lr": v[1]}, 1.5, "completed"),
        Outcome({"lr": v[1]}, 1.7, "completed"),  # mean 1.6: best
        Outcome({"lr": v[2]}, 0.5, "completed"),
        Outcome({"lr": v[2]}, 9.0, "diverged"),  # one diverged seed: +inf
    ]
    best = best_point(g0, results)
    assert best.point == {"lr": v[1]} and best.loss == pytest.approx(1.6)
    assert best.losses == (1.5, 1.7) and best.std_error == pytest.approx(0.1)


def test_points_off_the_grid_are_rejected():
    g0 = initial_grid([LR], width=32)
    with pytest.raises(ValueError, match="not a point"):
        best_point(g0, [Outcome({"lr": 0.0123}, 1.0, "completed")])


def test_significance_needs_seeds():
    prev = Best({"lr": 0.01}, 2.0, (2.0,))
    assert significantly_better(prev, Best({"lr": 0.01}, 2.1, (2.1,)))  # no noise estimate: go on
    noisy_prev = Best({"lr": 0.01}, 2.0, (1.9, 2.1, 2.0))
    assert not significantly_better(noisy_prev, Best({"lr": 0.01}, 1.99, (1.89, 2.09, 1.99)))
    assert significantly_better(noisy_prev, Best({"lr": 0.01}, 1.5, (1.49, 1.51, 1.5)))


def test_plan_levels_doubles_width_up_to_calibration():
    plans = plan_levels(
        Widths(256, 2048, 2560), [Axis("lr", 1e-3, 1, 8), Axis("weight_decay", 1e-3, 1, 8)], Narrowing(), 2
    )
    assert [p.width for p in plans] == [256, 512, 1024, 2048]
    assert [p.shape for p in plans] == ["8x8", "5x5", "3x3", "3x3"]
    assert [p.trials for p in plans] == [128, 50, 18, 18]
    assert [p.width for p in plan_levels(Widths(64, 64, 64), [LR], Narrowing())] == [64]


# --------------------------------------------------------------------------- properties

NAMES = ("lr", "weight_decay", "muon_lr_ratio")


@st.composite
def searches(draw):
    k = draw(st.integers(1, 3))
    axes = []
    for name in NAMES[:k]:
        lo = 10 ** draw(st.floats(-5, 0))
        hi = lo * 10 ** draw(st.floats(0.2, 3))
        axes.append(Axis(name, lo, hi, draw(st.integers(2, 9))))
    odd = draw(st.booleans())
    fewest = min(a.points for a in axes)
    mins = [m for m in range(1, fewest + 1) if not odd or m % 2]
    narrowing = Narrowing(
        shrink=draw(st.one_of(st.just("auto"), st.floats(0.3, 1.0))),
        odd=odd,
        min_points=draw(st.sampled_from(mins)),
        halve_spacing=draw(st.booleans()),
        edge_rule=draw(st.sampled_from(["keep", "widen"])),
    )
    return axes, narrowing, draw(st.integers(0, 2**32 - 1))


def _random_results(grid, rng: random.Random):
    """Random losses from a small set (to force ties), some diverged or failed, never all."""
    out = []
    for p in grid.points():
        status = rng.choices([Status.COMPLETED, Status.DIVERGED, Status.FAILED], [6, 1, 1])[0]
        for _ in range(rng.choice([1, 1, 2])):  # sometimes two seeds
            out.append(Outcome(p, rng.choice([0.5, 1.0, 1.5, 2.0, rng.random()]), status))
    out.append(Outcome(grid.points()[0], 3.0, Status.COMPLETED))  # at least one usable trial
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(searches())
def test_telescoping_invariants(search):
    axes, narrowing, seed = search
    rng = random.Random(seed)
    grid = initial_grid(axes, width=32)
    for level in range(1, 5):
        results = _random_results(grid, rng)
        best = best_point(grid, results)
        # The best really has the lowest seed-averaged loss (+inf for diverged, failed dropped).
        means = {}
        for o in results:
            if o.status is Status.FAILED:
                continue
            loss = o.loss if o.status is Status.COMPLETED else math.inf
            means.setdefault(tuple(o.point.items()), []).append(loss)
        assert best.loss == min(sum(v) / len(v) for v in means.values())

        new = next_grid(grid, results, axes, narrowing)
        assert new.level == level and new.width == grid.width * 2
        expected = level_counts(axes, narrowing, level)
        for a, old, g, n in zip(axes, grid.axes, new.axes, expected):
            values = g.values
            # Inside the allowed range, ascending, on a lattice of the recorded spacing.
            assert all(a.lo <= v <= a.hi for v in values)
            assert list(values) == sorted(set(values))
            logs = [math.log(v) for v in values]
            assert all(math.isclose(y - x, g.log_spacing, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(logs, logs[1:]))
            # Contains the previous best point.
            assert any(math.isclose(v, best.point[a.name], rel_tol=1e-9) for v in values)
            # Spacing halves unless the edge rule fired (or halving is switched off).
            factor = {"halved": 0.5, "kept": 1.0, "widened": 2.0, "unchanged": 1.0}[g.spacing_rule]
            assert math.isclose(g.log_spacing, old.log_spacing * factor, rel_tol=1e-9)
            on_edge = best.point[a.name] in (old.values[0], old.values[-1])
            at_range_edge = best.point[a.name] in (a.lo, a.hi)
            fired = on_edge and not at_range_edge and len(old.values) > 1
            assert g.edge_rule_fired == fired
            if not fired:
                assert g.spacing_rule == ("halved" if narrowing.halve_spacing else "unchanged")
            else:
                assert g.spacing_rule == ("kept" if narrowing.edge_rule == "keep" else "widened")
            # Follows the count schedule; fewer points only when the window covers the whole range.
            assert n >= narrowing.min_points
            if level and narrowing.odd and narrowing.min_points % 2:
                assert n % 2 == 1
            assert len(values) <= n
            if len(values) < n:
                assert (len(values) - 1) * g.log_spacing <= math.log(a.hi / a.lo) + 1e-9
                assert len(values) >= 1
        grid = new


@settings(max_examples=100, deadline=None)
@given(
    x_star=st.floats(1e-4, 1.0),
    alpha=st.floats(-200.0, 200.0),
    base=st.sampled_from([16, 32, 64, 256]),
    levels=st.integers(2, 6),
)
def test_drift_fit_recovers_x_star_and_alpha(x_star, alpha, base, levels):
    widths = [base * 2**i for i in range(levels)]
    optima = [(w, {"lr": math.exp(math.log(x_star) - alpha / w)}) for w in widths]
    target = widths[-1] * 3
    fit = fit_drift(optima, target)
    (lr,) = fit.axes
    assert lr.x_inf == pytest.approx(x_star, rel=1e-6)
    assert lr.alpha == pytest.approx(alpha, rel=1e-6, abs=1e-6 * base)
    assert lr.at_target == pytest.approx(x_star * math.exp(-alpha / target), rel=1e-6)
    assert lr.at_calibration == optima[-1][1]["lr"]
    if levels == 2:
        assert lr.alpha_se is None and lr.log_at_target_se is None
    else:
        assert lr.alpha_se == pytest.approx(0, abs=1e-6 * base) and lr.log_x_inf_se == pytest.approx(0, abs=1e-6)


def test_drift_fit_uncertainty_covers_the_truth_with_noise():
    rng = random.Random(0)
    widths = [64 * 2**i for i in range(6)]
    covered = 0
    for _ in range(200):
        optima = [(w, {"lr": math.exp(math.log(0.03) + 20 / w + rng.gauss(0, 0.05))}) for w in widths]
        (lr,) = fit_drift(optima, 4096).axes
        covered += abs(math.log(lr.x_inf) - math.log(0.03)) < 2 * lr.log_x_inf_se
    assert 160 <= covered <= 200  # ~2-sigma coverage with 4 degrees of freedom is ~88%


def test_drift_fit_needs_two_widths():
    with pytest.raises(ValueError):
        fit_drift([(64, {"lr": 0.01})], 1024)


def test_extended_grid_steps_past_a_sub_grid_edge_but_never_past_the_range():
    axes = [Axis("lr", 0.001, 0.1, 5), Axis("weight_decay", 0.01, 1.0, 5)]
    grid = initial_grid(axes, 64)
    inner = next_grid(
        grid,
        [
            Outcome(
                p,
                1.0 if p == {"lr": grid.axes[0].values[2], "weight_decay": grid.axes[1].values[2]} else 2.0,
                "completed",
            )
            for p in grid.points()
        ],
        axes,
        Narrowing(),
    )
    lr, wd = inner.axis("lr"), inner.axis("weight_decay")
    # best on the top edge of the lr sub-grid, interior in weight decay: one lr step up
    best = Best({"lr": lr.values[-1], "weight_decay": wd.values[1]}, 1.0, (1.0,))
    wider = extended_grid(inner, best, axes)
    assert wider.axis("weight_decay").values == wd.values
    assert wider.axis("lr").values[:-1] == lr.values
    assert math.log(wider.axis("lr").values[-1] / lr.values[-1]) == pytest.approx(lr.log_spacing)
    assert extended_grid(inner, Best({"lr": lr.values[1], "weight_decay": wd.values[1]}, 1.0, (1.0,)), axes) is None
    # at the range's edge there is nothing to extend into
    full = initial_grid(axes, 64)
    assert extended_grid(full, Best({"lr": 0.1, "weight_decay": 0.01}, 1.0, (1.0,)), axes) is None
