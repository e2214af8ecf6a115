"""Bad input is one line naming the problem, exit code 2, and nothing written or lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from micro import write_micro_config
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


@pytest.mark.parametrize("device, named", [("tpu", "unknown device 'tpu'"), ("cuda:0", "no CUDA GPU"),
                                           ("meta", "unknown device")])  # fmt: skip
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
