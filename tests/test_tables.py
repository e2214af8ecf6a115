"""Terminal tables fit 80 and 120 columns: one line per row, no word broken inside a cell,
human numbers; --wide shows every column. And `telescope compare` on two stored sweeps."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from micro import SMALLEST, TINY_TRIAL, run_micro_sweep
from typer.testing import CliRunner

from telescope import readable
from telescope.cli.main import app
from telescope.storage.database import Database

runner = CliRunner()


def table_lines(output: str, title: str) -> list[str]:
    """The body rows (lines starting with │) of the table titled `title`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    body = []
    for line in lines[start + 4 :]:
        if not line.startswith("│"):
            break
        body.append(line)
    return body


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("│").split("│")]


@pytest.mark.parametrize("width", [80, 120])
def test_status_fits_the_terminal_one_line_per_trial(smallest_sweep_db: str, width: int) -> None:
    result = runner.invoke(app, ["status", "micro", "--db", smallest_sweep_db], terminal_width=width)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= width
    with Database(smallest_sweep_db, create=False) as db:
        trials = db.trials("micro")
    rows = table_lines(result.stdout, "micro: trials")
    assert len(rows) == len(trials)  # a wrapped cell would add lines
    for line, trial in zip(rows, trials):
        row = cells(line)
        assert trial.status.value in row and readable.loss(trial.val_loss) in row
    if width == 80:
        assert "left out: key" in result.stdout and "--wide" in result.stdout


def test_status_wide_shows_every_column(smallest_sweep_db: str) -> None:
    result = runner.invoke(app, ["status", "micro", "--db", smallest_sweep_db, "--wide"], terminal_width=80)
    assert result.exit_code == 0, result.output
    with Database(smallest_sweep_db, create=False) as db:
        keys = [t.key for t in db.trials("micro")]
    rows = table_lines(result.stdout, "micro: trials")
    assert [cells(line)[0] for line in rows] == keys
    assert "left out" not in result.stdout and "train loss" in result.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_trial_prints_completed_whole(width: int) -> None:
    args = TINY_TRIAL
    result = runner.invoke(app, args, terminal_width=width)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= width
    (row,) = table_lines(result.stdout, result.stdout.splitlines()[0].strip())
    assert "completed" in cells(row) and any(c.endswith("FLOP") for c in cells(row))


def test_export_states_its_recommendation(smallest_sweep_db: str) -> None:
    payload = json.loads(runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "-f", "json"]).stdout)
    advice = payload["recommendation"]
    assert set(advice["use"]) == set(payload["base"]) - {"muon_lr_ratio"}  # the swept ones
    assert advice["reason"].startswith("Use the values")
    hidden = next(g for g in payload["groups"] if g["role"] == "hidden")
    assert hidden["weight_decay"] == pytest.approx(advice["values"]["weight_decay"])
    table = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "-f", "table"], terminal_width=80)
    assert advice["reason"][:40] in table.stdout


@pytest.fixture(scope="module")
def two_sweeps(smallest_sweep_db: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smallest sweep (renamed `paper`) and the same under `adamw`, in one database."""
    root = tmp_path_factory.mktemp("two-sweeps")
    shutil.copy(smallest_sweep_db.removeprefix("sqlite:///"), root / "sweeps.db")
    url = f"sqlite:///{root / 'sweeps.db'}"
    run_micro_sweep(url, root / "store", name="adamw", parametrization="adamw", **SMALLEST)
    return url


def test_compare_two_stored_sweeps_table_and_figure(two_sweeps: str, tmp_path: Path) -> None:
    figure = tmp_path / "compare.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clipping or layout warning from matplotlib
        result = runner.invoke(
            app, ["compare", "micro", "adamw", "--db", two_sweeps, "-o", str(figure)], terminal_width=80
        )
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:4] == b"\x89PNG"
    rows = {cells(line)[0]: cells(line)[1:] for line in table_lines(result.stdout, "sweeps compared")}
    assert rows["parametrization"] == ["paper", "adamw"]
    with Database(two_sweeps, create=False) as db:
        answers = [db.require_sweep(name).result for name in ("micro", "adamw")]
    assert rows["lr chosen"] == [readable.value(a["best"]["lr"]) for a in answers]
    assert rows["best loss"] == [readable.loss(a["best_loss"]) for a in answers]
    as_json = json.loads(runner.invoke(app, ["compare", "micro", "adamw", "--db", two_sweeps, "-f", "json"]).stdout)
    assert as_json[0] == {"quantity": "parametrization", "micro": "paper", "adamw": "adamw"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["micro"], "compare needs at least two sweeps"),
        (["micro", "micro"], "sweep 'micro' is named twice"),
        (["micro", "nosuch"], "no sweep named 'nosuch'"),
        (["micro", "adamw", "-o", "out.pdf"], "must end in .png"),
    ],
)
def test_compare_refuses_bad_input_in_one_line(two_sweeps: str, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["compare", *args, "--db", two_sweeps])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_human_numbers() -> None:
    assert readable.flops(1.58262e14) == "158 TFLOP" and readable.flops(3.33e10) == "33.3 GFLOP"
    assert readable.count(49376) == "49.4k" and readable.count(3.67e9) == "3.67B" and readable.count(25) == "25"
    assert readable.loss(0.895997) == "0.8960" and readable.value(0.0340000001) == "0.034"
    assert (readable.seconds(8.43), readable.seconds(299), readable.seconds(3723)) == ("8.4 s", "4:59", "1:02:03")
