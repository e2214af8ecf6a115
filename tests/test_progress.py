"""The live view's counts and its remaining-time estimate."""

import io

import pytest
from rich.console import Console

from telescope.progress import SweepProgress, fit_trial_time
from telescope.spec import Status


def test_trial_time_fit_recovers_fixed_and_per_flop_costs():
    observed = [(f, 2.0 + 3e-9 * f) for f in (1e9, 2e9, 4e9, 8e9)]
    a, b = fit_trial_time(observed)
    assert a == pytest.approx(2.0) and b == pytest.approx(3e-9)
    assert fit_trial_time([(1e9, 5.0), (1e9, 7.0)]) == (0.0, pytest.approx(6e-9))  # one size: proportional


def test_counts_and_remaining_time_after_a_level(monkeypatch):
    clock = iter([0.0, 20.0, 20.0, 20.0])
    monkeypatch.setattr("telescope.progress.time.monotonic", lambda: next(clock))
    progress = SweepProgress([(4, 1e9), (2, 4e9)], console=Console(file=io.StringIO()))
    progress.start_level(0, 32, total=4)
    for status in (Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.COMPLETED):
        progress.trial_started()
        progress.trial_finished(status, 1e9, seconds=10.0)
    c = progress.counts
    assert (c.done, c.running, c.diverged, c.failed) == (4, 0, 1, 1)
    # 40 trial-seconds in 20 wall seconds: two at a time; 2 trials of 4x the FLOPs left at 40 s each.
    assert progress.eta() == pytest.approx(2 * 40.0 / 2)
