"""Bad input is one line naming the problem, exit code 2, and nothing written or lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from micro import write_micro_config
from typer.testing import CliRunner

from telescope.cli.main import app

runner = CliRunner()


def one_line_exit_2(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    return lines[0]


def nothing_written(tmp_path: Path, db: Path, store: Path) -> None:
    assert not db.exists() and not store.exists(), sorted(p.name for p in tmp_path.iterdir())


def _bad_data(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name: (train.data, what the message names)"""
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "blob.bin").write_bytes(b"\x01\x02\x03")  # not a whole number of uint16 tokens
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "tiny.txt").write_bytes(b"abc")
    return {
        "missing": (str(tmp_path / "nope"), "not found"),
        "empty file": (str(tmp_path / "empty.txt"), "empty.txt"),
        "empty folder": (str(tmp_path / "empty-dir"), "empty-dir"),
        "malformed shard": (str(tmp_path / "blob.bin"), "blob.bin"),
        "malformed parquet": (str(tmp_path / "bad.parquet"), "bad.parquet"),
        "too short for a sequence": (str(tmp_path / "tiny.txt"), "tiny.txt"),
    }


def test_bad_data_stops_the_sweep_before_anything_is_written(tmp_path: Path) -> None:
    db, store = tmp_path / "t.db", tmp_path / "metrics"
    for name, (data, named) in _bad_data(tmp_path).items():
        config = write_micro_config(tmp_path / "c.toml", train={"data": data})
        line = one_line_exit_2(["sweep", str(config), "--db", str(db), "--store", str(store)])
        assert named in line, (name, line)
        nothing_written(tmp_path, db, store)


@pytest.mark.parametrize(
    "device, named", [("tpu", "unknown device 'tpu'"), ("cuda:0", "no CUDA GPU"), ("meta", "unknown device")]
)
def test_bad_device_stops_the_sweep_before_anything_is_written(tmp_path: Path, device: str, named: str) -> None:
    db, store = tmp_path / "t.db", tmp_path / "metrics"
    config = write_micro_config(tmp_path / "c.toml", train={"device": device})
    assert named in one_line_exit_2(["sweep", str(config), "--db", str(db), "--store", str(store)])
    nothing_written(tmp_path, db, store)


def test_data_with_tokens_beyond_the_vocabulary_is_refused(tmp_path: Path) -> None:
    import numpy as np

    shards = tmp_path / "shards"
    shards.mkdir()
    for split in ("train", "val"):
        np.arange(4000, dtype=np.uint16).tofile(shards / f"{split}.bin")
    db, store = tmp_path / "t.db", tmp_path / "metrics"
    config = write_micro_config(tmp_path / "c.toml", train={"data": str(shards)})
    line = one_line_exit_2(["sweep", str(config), "--db", str(db), "--store", str(store)])
    assert "model.vocab_size is 256" in line and "vocab_size = " in line
    nothing_written(tmp_path, db, store)


# -- files: one line naming the path, no temporary file left, the umask respected --


def test_export_output_that_cannot_be_written_is_one_line(smallest_sweep_db: str, tmp_path: Path) -> None:
    (tmp_path / "taken.json").mkdir()
    for target, reason in (
        (tmp_path / "no-such-dir" / "x.json", "No such file or directory"),
        (tmp_path / "taken.json", "it is a folder"),
        (Path("/sys/telescope-export.json"), ""),
    ):
        line = one_line_exit_2(["export", "micro", "--db", smallest_sweep_db, "-o", str(target)])
        assert line.startswith(f"error: cannot write {target}: {reason}"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]
    assert list((tmp_path / "taken.json").iterdir()) == []


def test_plot_into_an_unwritable_folder_is_one_line(smallest_sweep_db: str) -> None:
    assert "/sys/telescope-plots" in one_line_exit_2(
        ["plot", "micro", "--db", smallest_sweep_db, "-o", "/sys/telescope-plots"]
    )


def test_written_files_follow_the_umask(smallest_sweep_db: str, tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        out = runner.invoke(app, ["export", "micro", "--db", smallest_sweep_db, "-o", str(tmp_path / "e.json")])
        assert out.exit_code == 0, out.output
        from telescope.storage.metrics import MetricsStore

        metrics = MetricsStore(tmp_path / "store").write("s", 0, "k", [])
    finally:
        os.umask(old)
    assert (tmp_path / "e.json").stat().st_mode & 0o777 == 0o644
    assert metrics.stat().st_mode & 0o777 == 0o644


def test_unwritable_store_stops_the_sweep_before_anything_is_written(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    config = write_micro_config(tmp_path / "c.toml")
    line = one_line_exit_2(["sweep", str(config), "--db", str(db), "--store", "/sys/telescope-metrics"])
    assert line.startswith("error: metrics store: cannot write /sys/telescope-metrics")
    assert not db.exists()


# -- arguments and URLs --


@pytest.mark.parametrize(
    "args, named",
    [
        (["trial", "--lr", "nan", "--steps", "2"], "lr must be a finite number > 0, got nan"),
        (["trial", "--weight-decay", "inf", "--steps", "2"], "weight_decay must be a finite number >= 0, got inf"),
        (["trial", "--steps", str(2**70)], "overflow a 64-bit count"),
        (
            ["status", "--db", "postgresql://bob:s3cret@127.0.0.1:notaport/x"],
            "invalid database URL 'postgresql://***@127.0.0.1:notaport/x'",
        ),
        (["status", "--db", "garbage"], "--db 'garbage' is neither a database URL nor a SQLite file"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, monkeypatch, args: list[str], named: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert named in one_line_exit_2(args)
    assert list(tmp_path.iterdir()) == []


def test_passwords_in_url_parameters_are_never_printed(tmp_path: Path) -> None:
    for args in (["status"], ["query", "SELECT 1"]):
        line = one_line_exit_2([*args, "--db", "postgresql://bob@127.0.0.1:1/x?password=s3cret&connect_timeout=2"])
        assert "s3cret" not in line and "cannot" in line


def test_export_below_the_calibration_width_is_refused(smallest_sweep_db: str) -> None:
    line = one_line_exit_2(["export", "micro", "--db", smallest_sweep_db, "--target-width", "16"])
    assert "--target-width 16 is below the calibration width 32" in line


def test_transfer_check_checks_data_and_device_before_anything_is_written(tmp_path: Path) -> None:
    db, store = tmp_path / "t.db", tmp_path / "metrics"
    for train, named in (({"device": "tpu"}, "unknown device 'tpu'"), ({"data": str(tmp_path / "nope")}, "not found")):
        config = write_micro_config(tmp_path / "c.toml", train=train)
        args = ["transfer-check", str(config), "--executor", "local", "--db", str(db), "--store", str(store)]
        assert named in one_line_exit_2(args)
        nothing_written(tmp_path, db, store)
