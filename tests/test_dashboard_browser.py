"""optuna-dashboard over a mirrored micro sweep, in a real browser: headless Chromium loads
the study list and one study's page, and the rendered DOM holds the studies and their plots.
Skipped only where Chromium is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from telescope.cli.dashboard import serve_mirror
from telescope.dashboard.server import bind
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")


def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium until the page has loaded and rendered (virtual time), no network
    beyond the dashboard; returns its stdout."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        "--hide-scrollbars",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_chromium_renders_the_study_list_and_a_study_s_plots(smallest_sweep_db: str, tmp_path: Path) -> None:
    store = MetricsStore(Path(smallest_sweep_db.removeprefix("sqlite:///")).parent / "store")
    with Database(smallest_sweep_db, create=False) as db:
        names = [f"micro · level {lv.level} · width {lv.width}" for lv in db.levels("micro")]
        with serve_mirror(bind("127.0.0.1", 0), db, store, str(tmp_path / "mirror.db")) as base:
            listing = chromium(tmp_path / "profile", "--dump-dom", f"{base}/dashboard")
            for name in names:
                assert name in listing

            shot = tmp_path / "study.png"
            study = chromium(
                tmp_path / "profile",
                "--window-size=1400,1600",
                f"--screenshot={shot}",
                "--dump-dom",
                f"{base}/dashboard/studies/1",
            )
            assert names[0] in study
            for card in ("History", "Intermediate values", "Study User Attributes", "level_best"):
                assert card in study, card
            assert study.count('class="main-svg"') >= 3  # plotly drew the history, importance and curves
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1400) and pixels.std() > 0.05  # a drawn page, not a blank one
