"""Data printed through rich is text: brackets in names, stored errors or SQL results are
never read as markup (no crash, no style, no hyperlink)."""

from __future__ import annotations

from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.spec import Status, TrialResult, TrialSpec
from telescope.storage.database import Database

INJECTED = "[/x] [link=https://evil.example]click[/link] [bold red]not red[/]"


def test_query_results_with_brackets_print_as_they_are(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    Database(url).close()
    out = CliRunner().invoke(app, ["query", f"SELECT '{INJECTED}' AS [x/]", "--db", url, "--format", "table"])
    assert out.exit_code == 0, out.output
    assert "[/x]" in out.stdout and "[link=https://evil.example]" in out.stdout and "[bold red]" in out.stdout


def test_stored_errors_and_warnings_with_brackets_print_in_status(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    with Database(url) as db:
        db.create_sweep("s", {}, parametrization="paper", base_width=16, calibration_width=32)
        db.plan_level("s", 0, width=16, grid=[{"lr": 0.01}])
        db.add_trials("s", 0, [("k", TrialSpec(16, 16, 0.01, 0.0))])
        db.record_results("s", [("k", TrialResult(Status.FAILED, error=f"RuntimeError: {INJECTED}"))])
        db.finish_level("s", 0, best=None, best_loss=None, warnings=[f"edge {INJECTED}"])
    out = CliRunner().invoke(app, ["status", "s", "--db", url])
    assert out.exit_code == 0, out.output
    flat = out.stdout.replace("\n", "")
    assert "[/x]" in flat and "[link=https://evil.example]" in flat


def test_error_messages_keep_bracketed_words(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[model]\ndepth = 1\n")
    out = CliRunner().invoke(app, ["plan", str(config)])
    assert out.exit_code == 2
    assert out.stderr.strip() == "error: widths: missing section [widths]"
    out = CliRunner().invoke(app, ["status", "[/x]", "--db", str(tmp_path / "none.db")])
    assert out.exit_code == 2 and out.stderr.count("\n") == 1
