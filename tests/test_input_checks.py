"""Bad input met before any work: one line naming the problem, exit 2, nothing written.

Outputs that cannot be written (an immutable database, file or folder: `chattr +i`, which
holds even for root), widths that cannot fit in memory, values the option parser accepts
but that mean nothing (nan, inf, 10^20), a user's model that cannot be built or returns
the wrong thing, and the option parser's own usage errors."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micro import SMALLEST, write_micro_config
from typer.testing import CliRunner

from telescope.cli.main import app


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_one_line_exit_2(result, *phrases: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@contextlib.contextmanager
def immutable(path: Path):
    """`path` made immutable (even root cannot change it), or the test skipped where chattr is not available."""
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# -- outputs that cannot be written ---------------------------------------------------


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_database_that_cannot_be_written_is_one_line_before_any_trial(smallest_sweep_db, tmp_path, what):
    folder = tmp_path / "db"
    folder.mkdir()
    database = folder / "sweep.db"
    shutil.copy(smallest_sweep_db.removeprefix("sqlite:///"), database)
    config = write_micro_config(tmp_path / "sweep.toml", **SMALLEST)
    store = tmp_path / "store"
    with immutable(database if what == "file" else folder):
        result = run("sweep", str(config), "--db", str(database), "--store", str(store), "--name", "other")
    assert_one_line_exit_2(result, "cannot write to database")
    assert not list(store.rglob("*.parquet"))


def test_transfer_check_refuses_a_plot_it_cannot_write_before_training(tmp_path):
    folder = tmp_path / "plots"
    folder.mkdir()
    with immutable(folder):
        result = run(
            "transfer-check",
            "--executor",
            "local",
            "--steps",
            "2",
            "--db",
            str(tmp_path / "t.db"),
            "--store",
            str(tmp_path / "store"),
            "--plot",
            str(folder / "x.png"),
        )
    assert_one_line_exit_2(result, "cannot write", "plots")
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize("command", ["transfer-check", "coord-check"])
def test_widths_that_cannot_fit_in_memory_are_refused_before_training(tmp_path, command):
    outputs = ["--executor", "local", "--db", str(tmp_path / "t.db"), "--store", str(tmp_path / "store")]
    result = run(command, "--widths", "32,1048576", *(outputs if command == "transfer-check" else []))
    assert_one_line_exit_2(result, "width 1048576", "GiB")
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "store").exists()


# -- values that parse but mean nothing ---------------------------------------------


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["coord-check", "--lr", "nan"], "--lr"),
        (["coord-check", "--threshold", "nan"], "--threshold"),
        (["coord-check", "--widths", "64,128", "--plot", "/nonexistent-folder/x.png"], "does not exist"),
    ],
)
def test_coord_check_values(args, phrase):
    assert_one_line_exit_2(run(*args), phrase)


def test_export_to_an_absurd_width(smallest_sweep_db):
    assert_one_line_exit_2(
        run("export", "micro", "--db", smallest_sweep_db, "--target-width", "1000000000000"),
        "--target-width 1000000000000",
    )


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--limit", "100000000000000000000"], "--limit"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "inf", "--metrics"], "--timeout"),  # the DuckDB path
        (["--timeout", "nan"], "--timeout"),
    ],
)
def test_query_limits(db_url, args, phrase):
    from telescope.storage.database import Database

    Database(db_url).close()
    assert_one_line_exit_2(run("query", "SELECT 1", "--db", db_url, *args), phrase)


def test_query_refuses_a_file_as_its_store_as_sweep_does(smallest_sweep_db, tmp_path):
    store = tmp_path / "store"
    store.write_text("not a folder")
    result = run("query", "SELECT count(*) FROM metrics", "--db", smallest_sweep_db, "--store", str(store))
    assert_one_line_exit_2(result, "is a file, not a folder")


# -- a user's model -------------------------------------------------------------------

USER_MODELS = """
from torch import nn


def raises(width):
    raise RuntimeError("no model today")


def no_width():
    return nn.Linear(4, 4)


class PairLM(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.body = nn.Linear(width, width)
        self.lm_head = nn.Linear(width, 256, bias=False)

    def forward(self, idx):
        hidden = self.body(self.embed(idx))
        return self.lm_head(hidden), hidden


def returns_a_pair(width):
    return PairLM(width)
"""


@pytest.mark.parametrize(
    "factory, phrase",
    [
        ("raises", "RuntimeError: no model today"),
        ("no_width", "takes 0 positional arguments"),
        ("returns_a_pair", "returned a tuple, not logits"),
    ],
)
def test_coord_check_with_a_model_that_fails(tmp_path, monkeypatch, factory, phrase):
    module = f"user_models_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    result = run("coord-check", "--model", f"{module}:{factory}", "--widths", "32,64", "--steps", "2")
    assert_one_line_exit_2(result, phrase)


# -- the option parser ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "x.toml", "--executor", "k8s"],
        ["query", "SELECT 1", "-f", "xml"],
        ["trial", "--width", "abc"],
        ["export", "x", "--target-width", "0"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(args):
    result = run(*args)
    assert_one_line_exit_2(result, "--help`)")
    assert "╭" not in result.stderr


def test_usage_errors_through_the_console_script():
    script = Path(sys.executable).with_name("telescope")
    result = subprocess.run(
        [str(script), "sweep", "x.toml", "--executor", "k8s"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: Invalid value for '--executor': 'k8s' is not one of 'ray', 'local'. (try `telescope sweep --help`)\n"
    )
