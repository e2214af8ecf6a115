"""`telescope batch-study` end to end on micro proxies: stored and resumable like a sweep,
numbers that follow from the stored curves, plots, and bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from micro import write_micro_config
from typer.testing import CliRunner

from telescope.batch_study.analysis import tokens_to_loss
from telescope.cli.main import app
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore

runner = CliRunner()
STUDY = {
    "train": {"steps": 40, "batch_size": 4, "warmup_steps": 4},
    "widths": {"base": 16, "calibration": 32, "target": 32},
    "search": {"lr": {"lo": 0.01, "hi": 0.1, "points": 3}, "weight_decay": {"value": 0.0}},
}


def study(tmp_path: Path, *extra: str):
    config = write_micro_config(tmp_path / "study.toml", **STUDY)
    args = [
        "batch-study",
        str(config),
        "--batch-sizes",
        "2,4",
        "--db",
        str(tmp_path / "t.db"),
        "--store",
        str(tmp_path / "m"),
        "--name",
        "study",
        *extra,
    ]
    return runner.invoke(app, args)


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib: a clipped title, a layout not applied
def test_a_study_runs_stores_its_trials_and_resumes(tmp_path: Path) -> None:
    out = study(tmp_path, "--json", "--plot", str(tmp_path / "plots"))
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pareto.png", "ratio.png", "tokens-to-loss.png"]
    with Database(str(tmp_path / "t.db"), create=False) as db:
        sweep, trials = db.get_sweep("study"), db.trials("study")
    assert sweep.kind == "batch-study" and sweep.status == "completed"
    assert {t.parametrization for t in trials} == {"paper", "adamw"}
    assert {t.spec.train.batch_size: t.spec.train.steps for t in trials} == {2: 80, 4: 40}  # the same tokens
    target = result["targets"][0]
    assert {row["batch_size"] for row in target["rows"]} == {2, 4}

    # T_L is read off the stored curve of the best LR, and R_L is the ratio of the two
    store = MetricsStore(tmp_path / "m")
    L = target["loss"]
    for row in target["rows"]:
        t = {}
        for table in ("paper", "adamw"):
            trial = next(x for x in trials if x.key == f"{table}-B{row['batch_size']}-lr={row[f'lr_{table}']:.6g}-s0")
            curve = store.read("study", trial.level, trial.key)
            t[table] = tokens_to_loss(curve["tokens"].tolist(), curve["train_loss"].tolist(), L)
            assert row[f"T_{table}"] == (t[table] if math.isfinite(t[table]) else None)
        if math.isfinite(t["paper"]) and math.isfinite(t["adamw"]):
            assert row["R"] == t["adamw"] / t["paper"]

    again = study(tmp_path, "--json")  # resumes: nothing runs again
    assert again.exit_code == 0 and "trial 1 " not in again.stderr
    assert json.loads(again.stdout)["targets"] == result["targets"]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    config = write_micro_config(tmp_path / "study.toml", **STUDY)
    adamw = write_micro_config(tmp_path / "adamw.toml", **STUDY, parametrization="adamw")
    cases = [
        ([str(config), "--batch-sizes", "2,x"], "--batch-sizes must be comma-separated numbers"),
        ([str(config), "--batch-sizes", "4"], "needs at least two sizes"),
        ([str(config), "--batch-sizes", "2,64"], "batch size 64 leaves 2 steps"),
        ([str(config), "--losses", "-1"], "--losses must be positive"),
        ([str(adamw)], "trains hidden matrices with AdamW"),
    ]
    for args, message in cases:
        out = runner.invoke(app, ["batch-study", *args, "--db", str(tmp_path / "t.db"), "--store", str(tmp_path / "m")])
        assert out.exit_code == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.output
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "m").exists()
