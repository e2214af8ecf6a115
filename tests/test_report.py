"""`telescope report`: one Markdown file that embeds the figures and whose numbers are the
ones `telescope query` returns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_plots import FinishedSweep, assert_png, build_micro_sweep, fabricate_one_axis_sweep
from typer.testing import CliRunner

from telescope import readable
from telescope.cli.main import app
from telescope.config import parse_config
from telescope.cost import plan
from telescope.export import export_sweep
from telescope.report.plots import FIGURES
from telescope.storage.database import Database

runner = CliRunner()


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    return build_micro_sweep(tmp_path_factory.getbasetemp() / "report-micro-sweep")


@pytest.fixture(scope="module")
def report(micro: FinishedSweep, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "micro.md"
    result = runner.invoke(app, ["report", micro.name, "--db", micro.url, "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    return path


def query(micro: FinishedSweep, sql: str) -> list[dict]:
    result = runner.invoke(app, ["query", sql, "--db", micro.url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def first_table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def g(value: float | None) -> str:
    """A hyperparameter as the report prints it: 4 significant digits."""
    return "" if value is None else readable.value(value)


def test_report_embeds_the_four_figures_by_relative_path(report: Path) -> None:
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(FIGURES) == 4
    for link in links:
        assert not Path(link).is_absolute()
        assert_png(report.parent / link)
    assert [Path(link).stem for link in links] == [f.name for f in FIGURES]
    assert "## Transfer check" not in text


def test_level_table_matches_telescope_query(micro: FinishedSweep, report: Path) -> None:
    rows = first_table(section(report.read_text(), "Levels"))
    levels = query(
        micro,
        "SELECT level, width, best_lr, best_weight_decay, best_loss FROM levels WHERE sweep = 'micro' ORDER BY level",
    )
    counts = query(
        micro,
        "SELECT level, count(*) AS trials, sum(status = 'diverged') AS diverged, sum(status = 'failed') AS failed "
        "FROM trials WHERE sweep = 'micro' GROUP BY level ORDER BY level",
    )
    assert len(rows) == len(levels) == 3
    for row, lv, n in zip(rows, levels, counts):
        assert (row["level"], row["width"]) == (str(lv["level"]), str(lv["width"]))
        assert (row["best lr"], row["best weight_decay"], row["best val_loss"]) == (
            g(lv["best_lr"]),
            g(lv["best_weight_decay"]),
            readable.loss(lv["best_loss"]),
        )
        assert (row["trials"], row["diverged"], row["failed"]) == (
            str(n["trials"]),
            str(n["diverged"]),
            str(n["failed"]),
        )
    assert rows[0]["grid"] == "3x2" and rows[0]["diverged"] == "1" and rows[0]["failed"] == "1"


def test_cost_matches_telescope_query_and_the_plan(micro: FinishedSweep, report: Path) -> None:
    text = report.read_text()
    rows = {r["level"]: r for r in first_table(section(text, "Cost"))}
    (spent,) = query(
        micro, "SELECT count(*) AS n, sum(flops) AS flops, sum(wall_time) AS wall FROM trials WHERE sweep = 'micro'"
    )
    with Database(micro.url, create=False) as db:
        the_plan = plan(parse_config(db.require_sweep("micro").config))
    assert (rows["total"]["trials"], rows["total"]["FLOPs spent"]) == (str(spent["n"]), readable.flops(spent["flops"]))
    assert rows["total"]["trial time"] == readable.seconds(spent["wall"])
    assert (
        rows["total"]["FLOPs planned"] == readable.flops(the_plan.sweep_flops)
        and "FLOP" in rows["total"]["FLOPs planned"]
    )
    per_level = query(
        micro, "SELECT level, sum(flops) AS flops FROM trials WHERE sweep = 'micro' GROUP BY level ORDER BY level"
    )
    for lv in per_level:
        assert rows[str(lv["level"])]["FLOPs spent"] == readable.flops(lv["flops"])
    plan_rows = first_table(section(text, "Plan"))
    assert [(r["width"], r["grid"], r["trials"]) for r in plan_rows] == [
        (str(lc.width), lc.grid, str(lc.trials)) for lc in the_plan.levels
    ]


def test_chosen_values_and_drift_match_the_stored_result(micro: FinishedSweep, report: Path) -> None:
    text = report.read_text()
    with Database(micro.url, create=False) as db:
        result = db.require_sweep("micro").result
    rows = {r["hyperparameter"]: r for r in first_table(section(text, "Chosen values"))}
    for drift in result["drift"]:
        row = rows[drift["name"]]
        assert row["chosen"] == g(result["best"][drift["name"]])
        assert row["extrapolated to 256"] == g(drift["at_target"])
        assert row["alpha"] == g(drift["alpha"] + 0.0)
    assert rows["muon_lr_ratio (fixed)"]["chosen"] == "1"
    warnings = section(text, "Warnings")
    for warning in result["warnings"]:
        assert f"- {warning}" in warnings


def test_report_and_export_say_the_same_about_which_values_to_use(micro: FinishedSweep, report: Path) -> None:
    with Database(micro.url, create=False) as db:
        advice = export_sweep(db, "micro")["recommendation"]
        result = db.require_sweep("micro").result
    part = section(report.read_text(), "Chosen values")
    assert f"### Which values to use\n\n{advice['reason']}" in part
    rows = {r["hyperparameter"]: r for r in first_table(part)}
    assert {name: rows[name]["use"] for name in result["best"]} == advice["use"]
    for name, how in advice["use"].items():  # the recommended value is the chosen or the extrapolated one
        expected = (
            result["best"][name]
            if how == "chosen"
            else next(d["at_target"] for d in result["drift"] if d["name"] == name)
        )
        assert advice["values"][name] == pytest.approx(expected)


def test_numbers_read_as_a_person_reads_them(report: Path) -> None:
    text = report.read_text()
    assert re.search(r"\d+ [GTP]FLOP", section(text, "Plan")) and "e+" not in text
    assert all(re.fullmatch(r"\d\.\d{4}", r["best val_loss"]) for r in first_table(section(text, "Levels")))


def test_transfer_check_section_when_the_result_has_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tc.db'}"
    plot = tmp_path / "checks" / "transfer.png"
    check = {
        "verdict": "transfers",
        "table": [{"width": 64, "best_lr": 0.034}, {"width": 128, "best_lr": 0.048}],
        "plot": str(plot),
    }
    fabricate_one_axis_sweep(url, "checked", transfer_check=check)
    out = tmp_path / "reports" / "checked.md"
    out.parent.mkdir()
    result = runner.invoke(app, ["report", "checked", "--db", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    part = section(out.read_text(), "Transfer check")
    assert "- verdict: transfers" in part
    assert first_table(part) == [{"width": "64", "best_lr": "0.034"}, {"width": "128", "best_lr": "0.048"}]
    assert "![transfer check](../checks/transfer.png)" in part
    # one swept hyperparameter: the report still has every section, and no weight decay column
    levels = first_table(section(out.read_text(), "Levels"))
    assert "best weight_decay" not in levels[0] and levels[0]["diverged"] == "1"


def test_bad_input_exits_2_with_one_line_and_writes_nothing(micro: FinishedSweep, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    fabricate_one_axis_sweep(url, "unfinished", finish=False)
    (tmp_path / "folder.md").mkdir()
    cases = [
        (["report", "nosuch", "--db", micro.url, "-o", str(tmp_path / "a.md")], "no sweep named 'nosuch'"),
        (["report", "unfinished", "--db", url, "-o", str(tmp_path / "b.md")], "has not finished"),
        (["report", "micro", "--db", micro.url, "-o", str(tmp_path / "c.html")], "must end in .md"),
        (["report", "micro", "--db", micro.url, "-o", str(tmp_path / "folder.md")], "is a folder"),
        (["report", "micro", "--db", micro.url, "-o", str(tmp_path / "missing" / "d.md")], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.md", "open.db", "open.db.lock"]
    assert not any((tmp_path / "folder.md").iterdir())
