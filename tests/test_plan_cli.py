"""`telescope plan` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telescope.cli.main import app

from test_config import MALFORMED

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.mark.parametrize("example", ["paper-3.7b.toml", "tiny-cpu.toml"])
def test_plan_prints_levels_and_totals(example):
    result = runner.invoke(app, ["plan", str(EXAMPLES / example)])
    assert result.exit_code == 0, result.output
    for heading in ("level", "width", "heads", "params", "grid", "trials", "FLOPs/trial", "FLOPs/level"):
        assert heading in result.output
    for total in ("sweep", "one target run", "sweep / target run", "saving vs brute force"):
        assert total in result.output


def test_paper_plan_shows_the_paper_model_sizes_and_grids():
    result = runner.invoke(app, ["plan", str(EXAMPLES / "paper-3.7b.toml")])
    assert result.exit_code == 0, result.output
    assert "3.67B" in result.output
    for grid in ("8x8", "5x5", "3x3"):
        assert grid in result.output


@pytest.mark.parametrize("example", ["paper-3.7b.toml", "tiny-cpu.toml"])
def test_plan_json_parses(example):
    result = runner.invoke(app, ["plan", str(EXAMPLES / example), "--json"])
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

