"""The live view: level numbering, its first frame, counts and the remaining-time estimate."""

import io

import pytest
from rich.console import Console

from telescope.progress import SweepProgress
from telescope.remaining import PRIOR_FIXED_SHARE, Estimate, Growth
from telescope.spec import Status


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("telescope.progress.time.monotonic", c)
    return c


def text_of(progress: SweepProgress) -> str:
    console = Console(file=io.StringIO(), width=100)
    console.print(progress._render())
    return console.file.getvalue()


def run_level(
    progress: SweepProgress, clock: Clock, level: int, width: int, trials: int, flops: float, seconds: float
) -> None:
    """All of a level's trials at once, finishing `seconds` later."""
    progress.start_level(level, width, trials)
    run_trials(progress, clock, trials, flops, seconds)
    progress.end_level()


def run_trials(progress: SweepProgress, clock: Clock, trials: int, flops: float, seconds: float) -> None:
    """`trials` more trials of the level under way, started at once and finished `seconds` later."""
    for _ in range(trials):
        progress.trial_started()
    clock.now += seconds
    for _ in range(trials):
        progress.trial_finished(Status.COMPLETED, flops, seconds)


def test_first_frame_says_what_is_planned_not_level_1_of_width_0(clock):
    frame = text_of(SweepProgress([(25, 1e9), (9, 4e9), (9, 16e9)]))
    assert "starting: 3 levels, 43 trials planned" in frame
    assert "width 0" not in frame and "0/0" not in frame and "level 1" not in frame


def test_levels_count_from_0_as_plan_status_and_report_do(clock):
    out = io.StringIO()
    progress = SweepProgress([(2, 1e9), (2, 4e9), (2, 16e9)], console=Console(file=out, width=80))
    with progress:
        for level, width in enumerate((32, 64, 128)):
            run_level(progress, clock, level, width, 2, 1e9 * 4**level, 10.0)
            assert f"level {level} ({level + 1} of 3), width {width}" in text_of(progress)
    lines = out.getvalue().splitlines()  # not a terminal: one line per level, then the closing note
    assert [line.split(" |")[0] for line in lines[:3]] == [
        "level 0 (1 of 3), width 32",
        "level 1 (2 of 3), width 64",
        "level 2 (3 of 3), width 128",
    ]
    assert "level 3" not in out.getvalue()
    # 2 trials at 5 s, then 2 at 5 * (0.6 + 0.4 * 4) = 11 s and 2 at 5 * (0.6 + 0.4 * 16) = 35 s
    assert lines[3] == "sweep took 0:00:30; after the first level: estimated 0:01:32 to go, took 0:00:20, 78% less"


def test_counts(clock):
    progress = SweepProgress([(4, 1e9)], console=Console(file=io.StringIO()))
    progress.start_level(0, 32, total=4)
    for status in (Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.COMPLETED):
        progress.trial_started()
        progress.trial_finished(status, 1e9, seconds=10.0)
    assert (progress.done, progress.running, progress.diverged, progress.failed) == (4, 0, 1, 1)
    assert "4/4 done  0 running  1 diverged  1 failed" in text_of(progress)


def test_remaining_time_after_the_first_level_uses_its_seconds_per_flop(clock):
    progress = SweepProgress([(10, 1e9), (5, 4e9)], console=Console(file=io.StringIO()))
    clock.now = 7.0  # before the first trial starts (e.g. Ray's workers): not a trial's cost
    run_level(progress, clock, 0, 32, 10, 1e9, 20.0)  # 2 s per trial of 1 GFLOP
    # 5 trials of 4x the FLOPs: a share of level 0's 2 s stays, the rest grows 4x
    level_1 = 5 * 2.0 * (PRIOR_FIXED_SHARE + (1 - PRIOR_FIXED_SHARE) * 4)
    assert progress.eta() == Estimate(*3 * [pytest.approx(level_1)])
    progress.start_level(1, 64, 5)
    progress.trial_started()
    clock.now += 4.0
    assert progress.eta().low == pytest.approx(level_1 - 4.0)


def test_two_measured_widths_split_fixed_time_from_time_per_flop(clock):
    progress = SweepProgress([(4, 1e9), (4, 4e9), (4, 16e9)], console=Console(file=io.StringIO()))
    run_level(progress, clock, 0, 32, 4, 1e9, 10.0)  # 2.5 s per trial
    run_level(progress, clock, 1, 64, 4, 4e9, 20.0)  # 5 s per trial: 5/3 s fixed + 5/6 s per GFLOP
    assert progress.eta().low == pytest.approx(4 * (5 / 3 + 16 * 5 / 6))
    assert "~0:01:00 remaining" in text_of(progress)


def test_resumed_trials_count_but_take_no_time(clock):
    progress = SweepProgress([(4, 1e9), (4, 4e9)], console=Console(file=io.StringIO()))
    progress.start_level(0, 32, 4)
    for _ in range(2):
        progress.trial_finished(Status.COMPLETED, 1e9, 99.0, resumed=True)
    assert progress.done == 2 and progress.eta() is None
    assert "~? remaining" in text_of(progress)


def test_the_dashboard_and_a_database_notice_are_rows_of_the_view(clock, monkeypatch):
    monkeypatch.setattr(SweepProgress, "dashboard", "http://127.0.0.1:8265")
    progress = SweepProgress([(1, 1e9)])
    progress.notice = "database unavailable, retrying (23 s)"
    assert "dashboard  http://127.0.0.1:8265" in text_of(progress)
    assert "database unavailable, retrying (23 s)" in text_of(progress)


def test_an_extended_level_counts_its_new_trials(clock):
    progress = SweepProgress([(2, 1e9)], console=Console(file=io.StringIO()))
    progress.start_level(0, 32, 2)
    run_trials(progress, clock, 2, 1e9, 10.0)
    progress.extend_level(3)  # the edge extension: 3 more trials at the same width
    assert "2/5 done" in text_of(progress)
    assert progress.eta().low == pytest.approx(3 * 5.0)  # 10 s for the first two


def test_while_the_last_level_may_grow_the_view_gives_a_range_and_the_note_says_what_happened(clock):
    out = io.StringIO()
    progress = SweepProgress([(2, 1e9), (2, 1e9)], console=Console(file=out, width=100), growth=Growth(3, 2.0))
    with progress:
        run_level(progress, clock, 0, 32, 2, 1e9, 10.0)  # 5 s per trial: 2 trials, 2 more on average, 3 at most
        assert "~0:00:20 remaining (0:00:10 to 0:00:25 as the last level grows)" in text_of(progress)
        progress.start_level(1, 64, 2)
        run_trials(progress, clock, 2, 1e9, 10.0)
        progress.extend_level(3)
        assert "~0:00:25 remaining (0:00:15 to 0:00:30 as it grows further)" in text_of(progress)
        run_trials(progress, clock, 3, 1e9, 15.0)
        progress.end_level()
        assert "~0:00:00 remaining" in text_of(progress) and "grows" not in text_of(progress)
    assert out.getvalue().splitlines()[-1] == (
        "sweep took 0:00:35; after the first level: estimated 0:00:20 to go "
        "(0:00:10 to 0:00:25 as the last level grows), took 0:00:25, 25% more (the last level grew 1 step)"
    )


def test_the_note_says_when_the_last_level_did_not_grow(clock):
    out = io.StringIO()
    with SweepProgress([(2, 1e9), (2, 1e9)], console=Console(file=out, width=100), growth=Growth(3, 2.0)) as progress:
        run_level(progress, clock, 0, 32, 2, 1e9, 10.0)
        run_level(progress, clock, 1, 64, 2, 1e9, 12.0)
    assert out.getvalue().splitlines()[-1] == (
        "sweep took 0:00:22; after the first level: estimated 0:00:20 to go "
        "(0:00:10 to 0:00:25 as the last level grows), took 0:00:12, 40% less (the last level did not grow)"
    )
