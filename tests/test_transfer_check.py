"""`telescope transfer-check` end to end on micro proxies: real local executor and SQLite,
trials queryable and resumable, the user's own model (`--model`) for transfer-check and
coord-check, bad input -> exit 2, and `sweep --check-transfer` stopping on FAIL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from micro import write_micro_config
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.storage.database import Database

TESTS = Path(__file__).parent
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_micro_config(tmp_path / "micro.toml")


@pytest.fixture
def places(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'check.db'}", "--store", str(tmp_path / "store")]


@pytest.fixture
def foreign_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def check(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["transfer-check", *args])
    try:
        payload = json.loads(result.stdout)
    except json.JSONDecodeError:
        payload = None
    return result.exit_code, payload, result.output


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib: a clipped title, a layout not applied
def test_check_runs_through_executor_and_storage_is_queryable_and_resumes(
    config: Path, places: list[str], tmp_path: Path
) -> None:
    plot = tmp_path / "check.png"
    code, payload, output = check(str(config), "--points", "3", "--seeds", "1", "--json", "--plot", str(plot), *places)
    assert code in (0, 1), output
    assert payload["verdict"] == ("PASS" if code == 0 else "FAIL")
    assert [w["width"] for w in payload["widths"]] == [16, 64]  # the sweep's first widths
    assert len(payload["doublings"]) == 1 and payload["doublings"][0]["doublings"] == 2.0
    assert payload["ran"] == payload["trials"] >= 6
    assert plot.stat().st_size > 0 and payload["plot"] == str(plot.resolve())

    sql = (
        "SELECT s.kind, count(*) AS n FROM trials t JOIN sweeps s ON s.name = t.sweep WHERE t.sweep = "
        f"'{payload['check']}'"
    )
    out = runner.invoke(app, ["query", sql, "--format", "json", places[0], places[1]])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{"kind": "transfer-check", "n": payload["trials"]}]
    metrics = runner.invoke(
        app, ["query", "SELECT count(DISTINCT trial_key) AS n FROM metrics", "--format", "json", *places]
    )
    assert json.loads(metrics.stdout) == [{"n": payload["trials"]}]

    code2, again, _ = check(str(config), "--points", "3", "--seeds", "1", "--json", *places)
    assert code2 == code and again["ran"] == 0  # every trial was stored: nothing reruns
    assert again["widths"] == payload["widths"] and again["reasons"] == payload["reasons"]


def test_check_on_a_model_that_is_not_the_proxy(config: Path, places: list[str], foreign_path: None) -> None:
    code, payload, output = check(
        str(config),
        "--model",
        "foreign_models:encoder_lm",
        "--widths",
        "16,32",
        "--points",
        "3",
        "--seeds",
        "1",
        "--steps",
        "6",
        "--json",
        *places,
    )
    assert code in (0, 1), output
    assert [w["width"] for w in payload["widths"]] == [16, 32]
    with Database(places[1], create=False) as db:
        trials = db.trials(payload["check"])
    assert trials and all(t.spec.model_factory == "foreign_models:encoder_lm" for t in trials)
    assert all(t.status.value == "completed" for t in trials)


def test_coord_check_on_a_model_that_is_not_the_proxy(foreign_path: None) -> None:
    result = runner.invoke(
        app, ["coord-check", "--model", "foreign_models:encoder_lm", "--widths", "16,32,64", "--steps", "3", "--json"]
    )
    assert result.exit_code in (0, 1), result.output
    layers = {row["layer"] for row in json.loads(result.stdout)["layers"]}
    assert {"embed", "blocks.layers.0.linear1", "lm_head", "logits"} <= layers


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("foreign_models", "not of the form package.module:factory"),
        ("no_such_module_xyz:factory", "no module named 'no_such_module_xyz'"),
        ("foreign_models:missing", "has no attribute 'missing'"),
        ("foreign_models:not_a_module", "not a torch.nn.Module"),
        ("foreign_models:with_expert_bank", "parameter 'experts'"),
        ("foreign_models:tied_no_head", "no unembedding found"),
    ],
)
@pytest.mark.parametrize("command", ["transfer-check", "coord-check"])
def test_bad_models_exit_2_with_one_line_and_write_nothing(
    command: str, factory: str, message: str, tmp_path: Path, foreign_path: None
) -> None:
    args = [command, "--model", factory, "--widths", "16,32"]
    if command == "transfer-check":
        args += [
            "--db",
            f"sqlite:///{tmp_path / 'check.db'}",
            "--store",
            str(tmp_path / "store"),
            "--executor",
            "local",
        ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "check.db").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "64"], "at least two"),
        (["--widths", "256,64"], "strictly increasing"),
        (["--points", "2"], "--points"),
        (["--parametrization", "nope"], "unknown parametrization"),
        (["--plot", "out.pdf"], ".png"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str, places: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["transfer-check", *args, *places])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "check.db").exists()


def test_sweep_with_check_transfer_stops_on_fail_unless_forced(config: Path, places: list[str], tmp_path: Path) -> None:
    # A threshold of 1e-9 grid steps cannot be met by any measured drift: a real, cheap FAIL.
    strict = ["sweep", str(config), "--check-transfer", "--check-threshold", "1e-9", *places]
    stopped = runner.invoke(app, strict)
    assert stopped.exit_code == 1, stopped.output
    assert (
        "FAIL" in stopped.output
        and "optima per width" in stopped.output
        and "transfer check micro-transfer-check" in stopped.output
        and "drift in grid steps" in stopped.output
    )
    with Database(places[1], create=False) as db:
        sweep = db.get_sweep("micro")
        assert sweep.status == "stopped" and db.trials("micro") == []
        assert sweep.result["transfer_check"]["verdict"] == "FAIL"
        assert db.get_sweep("micro-transfer-check").kind == "transfer-check"

    forced = runner.invoke(app, [*strict, "--force"])
    assert forced.exit_code == 0, forced.output
    with Database(places[1], create=False) as db:
        result = db.get_sweep("micro").result
        assert db.get_sweep("micro").status == "completed" and db.trials("micro")
    section = result["transfer_check"]
    assert section["verdict"] == "FAIL" and [r["width"] for r in section["table"]] == [16, 64]
    assert Path(section["plot"]).is_file()

    report = tmp_path / "micro-report.md"
    out = runner.invoke(app, ["report", "micro", "--db", places[1], "--output", str(report)])
    assert out.exit_code == 0, out.output
    text = report.read_text()
    assert "## Transfer check" in text and "![transfer check]" in text


def test_a_named_check_with_other_settings_is_refused_unless_new(config: Path, places: list[str]) -> None:
    """Every kind of run resumes, refuses and starts anew the same way as a sweep."""
    base = [str(config), "--name", "mine", "--points", "3", "--seeds", "1", "--steps", "2", "--json", *places]
    code, first, output = check(*base)
    assert code in (0, 1), output
    code, _, output = check(*base, "--lr", "0.05")
    assert code == 2 and "different configuration" in output and "--new" in output
    code, second, output = check(*base, "--lr", "0.05", "--new")
    assert code in (0, 1), output
    assert (first["check"], second["check"]) == ("mine", "mine-2")
    code, again, _ = check(*base)  # the first check, finished: derived again, nothing trained
    assert again["ran"] == 0 and again["verdict"] == first["verdict"]
