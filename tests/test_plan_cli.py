"""`telescope plan` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_config import MALFORMED
from typer.testing import CliRunner

from telescope.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.mark.parametrize("example", ["paper-3.7b.toml", "tiny-cpu.toml"])
def test_plan_prints_levels_and_totals(example):
    result = runner.invoke(app, ["plan", str(EXAMPLES / example), "--no-data-check"])
    assert result.exit_code == 0, result.output
    for heading in ("level", "width", "heads", "params", "grid", "trials", "FLOPs/trial", "FLOPs/level"):
        assert heading in result.output
    for total in ("sweep", "one target run", "sweep / target run", "saving vs brute force"):
        assert total in result.output


def test_paper_plan_shows_the_paper_model_sizes_and_grids():
    result = runner.invoke(app, ["plan", str(EXAMPLES / "paper-3.7b.toml"), "--no-data-check", "--wide"])
    assert result.exit_code == 0, result.output
    assert "3.67B" in result.output
    for grid in ("8x8", "5x5", "3x3"):
        assert grid in result.output


@pytest.mark.parametrize("example", ["paper-3.7b.toml", "tiny-cpu.toml"])
def test_plan_json_parses(example):
    result = runner.invoke(app, ["plan", str(EXAMPLES / example), "--json", "--no-data-check"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["levels"][0]["width"] * 2 ** (len(plan["levels"]) - 1) == plan["levels"][-1]["width"]
    assert plan["sweep_flops"] == pytest.approx(sum(lv["flops_per_level"] for lv in plan["levels"]))
    assert plan["saving"] > 1 and plan["target_flops"] > 0


@pytest.mark.parametrize("text,expected", MALFORMED[::2] + MALFORMED[1::8], ids=lambda v: str(v)[:30])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, text, expected):
    config = tmp_path / "sweep.toml"
    config.write_text(text)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["plan", str(config), "--json"])
    assert result.exit_code == 2
    assert expected.split(":")[0] in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.toml"]


def test_missing_config_file_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["plan", "nope.toml"])
    assert result.exit_code == 2 and "no such config file" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data,expected", [("missing-dir", "data path not found"), ("empty.txt", "file is empty")])
def test_plan_checks_the_data_as_sweep_does(tmp_path, data, expected):
    (tmp_path / "empty.txt").write_bytes(b"")
    text = (EXAMPLES / "tiny-cpu.toml").read_text().replace('data = "stdlib"', f'data = "{tmp_path / data}"')
    config = tmp_path / "sweep.toml"
    config.write_text(text)
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2 and result.stdout == ""
    assert expected in result.stderr and result.stderr.count("\n") == 1
    skipped = runner.invoke(app, ["plan", str(config), "--no-data-check"])
    assert skipped.exit_code == 0 and "totals" in skipped.stdout


def test_plan_checks_the_device(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text((EXAMPLES / "tiny-cpu.toml").read_text().replace('device = "cpu"', 'device = "tpu"'))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 2 and "unknown device 'tpu'" in result.stderr


@pytest.mark.parametrize("width", [80, 120])
def test_plan_fits_the_terminal_with_human_numbers(width):
    result = runner.invoke(app, ["plan", str(EXAMPLES / "paper-3.7b.toml"), "--no-data-check"], terminal_width=width)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= width
    assert "TFLOP" in result.stdout or "PFLOP" in result.stdout or "EFLOP" in result.stdout
    assert "e+" not in result.stdout
