"""Every example runs as the README says, or says in one line what it needs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.export import export_sweep, render
from telescope.storage.database import Database

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
runner = CliRunner()


def test_there_are_the_documented_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"tiny-cpu.toml", "single-gpu.toml", "ray-cluster-postgres.toml", "paper-3.7b.toml"} <= names
    readme = (ROOT / "README.md").read_text()
    for path in [*EXAMPLES, ROOT / "examples" / "train_target.py"]:
        assert f"examples/{path.name}" in readme, f"{path.name} is not described in the README"


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_plan_runs_on_every_example(config: Path) -> None:
    result = runner.invoke(app, ["plan", str(config), "--json", "--no-data-check"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["sweep_trials"] == sum(level["trials"] for level in plan["levels"]) > 0


def test_readme_plan_commands_run() -> None:
    commands = re.findall(r"^telescope plan (\S+)((?: --[\w-]+)*)\s*(?:#.*)?$", (ROOT / "README.md").read_text(), re.M)
    assert len(commands) >= 4, "the README shows no `telescope plan` command"
    for path, options in commands:
        result = runner.invoke(app, ["plan", str(ROOT / path), *options.split()])
        assert result.exit_code == 0, f"telescope plan {path}{options}: {result.output}"


def test_readme_python_blocks_run(smallest_sweep_db: str, tmp_path: Path) -> None:
    """Every ```python block of the README, as written, in a folder holding what it reads:
    `examples/tiny-cpu.toml` is the micro sweep's config there (the real one takes minutes),
    and `export.json` a real export at width 128."""
    from micro import SMALLEST, write_micro_config

    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert len(blocks) >= 2
    (tmp_path / "examples").mkdir()
    write_micro_config(tmp_path / "examples" / "tiny-cpu.toml", **SMALLEST, name="tiny-cpu")
    exported = runner.invoke(
        app,
        ["export", "micro", "--db", smallest_sweep_db, "--target-width", "128", "-o", str(tmp_path / "export.json")],
    )
    assert exported.exit_code == 0, exported.output
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_example_says_it_needs_a_gpu(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    for extra in ([], ["--executor", "local"]):
        result = runner.invoke(
            app,
            [
                "sweep",
                str(ROOT / "examples/single-gpu.toml"),
                "--db",
                f"sqlite:///{db}",
                "--store",
                str(tmp_path / "store"),
                *extra,
            ],
        )
        assert result.exit_code == 2, result.output
        assert "no CUDA GPU" in result.output and len(result.output.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "store").exists()


def test_cluster_example_says_the_cluster_is_absent(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    result = runner.invoke(
        app,
        [
            "sweep",
            str(ROOT / "examples/ray-cluster-postgres.toml"),
            "--ray-address",
            "127.0.0.1:1",
            "--db",
            f"sqlite:///{db}",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not db.exists()


def test_export_table_is_readable_and_json_stays_json(smallest_sweep_db: str) -> None:
    table = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "--format", "table"], terminal_width=120)
    assert table.exit_code == 0, table.output
    with Database(smallest_sweep_db, create=False) as db:
        payload = export_sweep(db, "micro")
    for group in payload["groups"]:
        short = group["params"][0].removeprefix("blocks.*.").removesuffix(".weight")  # as the table names it
        line = next(row for row in table.stdout.splitlines() if row.split()[:1] == [group["role"]] and short in row)
        assert group["role"] in line and group["optimizer"] in line and f"{group['lr']:.4g}" in line
    assert "base values" in table.stdout and "widths 16 -> 32" in table.stdout
    as_json = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "--format", "json"])
    assert json.loads(as_json.stdout)["groups"] == json.loads(json.dumps(payload["groups"]))
    piped = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db])  # not a terminal: JSON
    assert json.loads(piped.stdout)["base"] == payload["base"]
    refused = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "-f", "table", "-o", "x.txt"])
    assert refused.exit_code == 2


def test_train_target_trains_with_an_export(smallest_sweep_db: str, tmp_path: Path) -> None:
    with Database(smallest_sweep_db, create=False) as db:
        path = tmp_path / "export.yaml"
        path.write_text(render(export_sweep(db, "micro"), "yaml"))
    script = str(ROOT / "examples/train_target.py")
    done = subprocess.run(
        [sys.executable, script, str(path), "--steps", "4", "--batch-size", "2", "--log-every", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "training width 64" in done.stdout and "hidden    muon" in done.stdout
    losses = [float(x) for x in re.findall(r"train loss (\S+)", done.stdout)]
    val = float(re.search(r"validation loss (\S+)", done.stdout).group(1))
    assert len(losses) == 2 and all(math.isfinite(x) for x in [*losses, val])
    if not torch.cuda.is_available():
        no_gpu = subprocess.run(
            [sys.executable, script, str(path), "--device", "cuda"], capture_output=True, text=True, timeout=120
        )
        assert no_gpu.returncode == 2 and no_gpu.stderr.strip().count("\n") == 0, no_gpu.stderr
