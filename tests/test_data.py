"""Training data: every source format, batch contract, determinism, splits, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from telescope.data import SHARD_MAGIC, TokenData, load_data
from telescope.data import load as data
from telescope.errors import DataError


@pytest.fixture(autouse=True)
def fresh_process_cache():
    data._load_resolved.cache_clear()
    yield
    data._load_resolved.cache_clear()


def write_raw_shard(path: Path, tokens) -> Path:
    np.asarray(tokens, dtype="<u2").tofile(path)
    return path


def write_modded_shard(path: Path, tokens, magic=SHARD_MAGIC, version=1, count=None) -> Path:
    tokens = np.asarray(tokens, dtype="<u2")
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + tokens.tobytes())
    return path


def assert_batch_contract(x: torch.Tensor, y: torch.Tensor, batch_size: int, seq_len: int) -> None:
    assert x.dtype == y.dtype == torch.int64
    assert x.shape == y.shape == (batch_size, seq_len)
    assert torch.equal(x[:, 1:], y[:, :-1]), "targets are the inputs shifted by one"


def rows_are_runs(x: torch.Tensor, y: torch.Tensor) -> bool:
    """For arange-token files: each window is a contiguous run of one file."""
    full = torch.cat([x, y[:, -1:]], dim=1)
    return bool((full.diff(dim=1) == 1).all())


def stream_bytes(segments) -> bytes:
    return b"".join(np.asarray(s).tobytes() for s in segments)


def window_bytes(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    return [bytes(row.tolist()) for row in torch.cat([x, y[:, -1:]], dim=1)]


# --- formats ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdlib(tmp_path_factory) -> tuple[TokenData, Path]:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TELESCOPE_CACHE", str(cache))
        data._load_resolved.cache_clear()
        loaded = load_data()
        data._load_resolved.cache_clear()
    return loaded, cache


def test_stdlib_corpus_is_byte_level_python_with_file_level_validation(stdlib):
    corpus, _ = stdlib
    assert corpus.vocab_size == 256
    assert corpus.train_tokens > 5_000_000 and 0.005 < corpus.val_tokens / corpus.train_tokens < 0.1
    x, y = corpus.train_batch(step=0, batch_size=4, seq_len=128, seed=0)
    assert_batch_contract(x, y, 4, 128)
    train, val = stream_bytes(corpus.train), stream_bytes(corpus.val)
    # The validation split holds whole source files that never occur in training.
    val_docs = [d for d in val.split(b"\x00") if len(d) > 2000]
    assert val_docs
    for doc in val_docs[:5]:
        assert doc not in train
    assert b"def " in train and b"import " in train


def test_stdlib_is_cached_on_disk_and_reloads_identically(stdlib, monkeypatch):
    corpus, cache = stdlib
    cached_files = sorted(p.name for p in cache.iterdir())
    assert len(cached_files) == 2 and not any(name.endswith(".tmp") for name in cached_files)
    monkeypatch.setenv("TELESCOPE_CACHE", str(cache))
    reloaded = load_data("stdlib")
    assert isinstance(reloaded.train[0], np.memmap), "second load reads the disk cache"
    assert np.array_equal(reloaded.train[0], corpus.train[0])
    assert np.array_equal(reloaded.val[0], corpus.val[0])
    for a, b in zip(reloaded.val_batches(2, 4, 64), corpus.val_batches(2, 4, 64)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_nanogpt_folder_uses_train_and_val_files(tmp_path):
    write_raw_shard(tmp_path / "train.bin", np.arange(1000, 3000))
    write_raw_shard(tmp_path / "val.bin", np.arange(40000, 40500))
    d = load_data(tmp_path)
    assert d.vocab_size == 40500, "the largest token + 1, never assumed to be GPT-2's"
    assert (d.train_tokens, d.val_tokens) == (2000, 500)
    x, y = d.train_batch(3, batch_size=8, seq_len=16, seed=1)
    assert_batch_contract(x, y, 8, 16)
    assert rows_are_runs(x, y) and x.min() >= 1000 and y.max() < 3000
    for vx, vy in d.val_batches(2, batch_size=4, seq_len=16):
        assert_batch_contract(vx, vy, 4, 16)
        assert rows_are_runs(vx, vy) and vx.min() >= 40000 and vy.max() < 40500


def test_modded_nanogpt_shards_windows_never_cross_shards(tmp_path):
    write_modded_shard(tmp_path / "fineweb_train_000001.bin", np.arange(0, 300))
    write_modded_shard(tmp_path / "fineweb_train_000002.bin", np.arange(10000, 10300))
    write_modded_shard(tmp_path / "fineweb_val_000000.bin", np.arange(20000, 20200))
    d = load_data(str(tmp_path))
    assert (d.train_tokens, d.val_tokens) == (600, 200)
    x, y = d.train_batch(0, batch_size=64, seq_len=32, seed=0)
    assert rows_are_runs(x, y)
    assert (x < 300).any() and (x >= 10000).any(), "both train shards are sampled"
    assert y.max() < 20000
    ((vx, vy),) = d.val_batches(1, batch_size=8, seq_len=32)
    assert rows_are_runs(vx, vy) and vx.min() >= 20000


def test_single_shard_splits_off_its_tail(tmp_path):
    d = load_data(write_modded_shard(tmp_path / "shard.bin", np.arange(10000)))
    assert (d.train_tokens, d.val_tokens) == (9000, 1000)
    x, y = d.train_batch(0, batch_size=32, seq_len=50, seed=0)
    assert y.max() < 9000
    for vx, _ in d.val_batches(4, batch_size=8, seq_len=50):
        assert vx.min() >= 9000


def test_vocab_grows_past_gpt2_when_tokens_exceed_it(tmp_path):
    d = load_data(write_raw_shard(tmp_path / "big.bin", [1, 2, 60000, 3] * 50))
    assert d.vocab_size == 60001


def test_text_file_is_byte_level_with_tail_validation(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(200)).encode()
    d = load_data(_write(tmp_path / "notes.txt", text))
    assert d.vocab_size == 256
    assert stream_bytes(d.train) + stream_bytes(d.val) == text
    assert d.val_tokens == len(text) // 10
    x, y = d.train_batch(0, batch_size=8, seq_len=40, seed=0)
    assert_batch_contract(x, y, 8, 40)
    assert all(w in text[: d.train_tokens] for w in window_bytes(x, y))


def test_text_folder_splits_whole_files_and_skips_binary_and_hidden(tmp_path):
    contents = {}
    for i in range(120):
        path = tmp_path / f"sub{i % 3}" / f"doc{i:03d}.md"
        contents[path] = f"<doc {i:03d}> ".encode() + b"lorem ipsum dolor sit amet " * 4
        _write(path, contents[path])
    _write(tmp_path / "image.png", b"\x89PNG\x00\x00binary")
    _write(tmp_path / ".hidden" / "secret.txt", b"SECRET hidden text")
    _write(tmp_path / "empty.txt", b"")
    d = load_data(tmp_path)
    train, val = stream_bytes(d.train), stream_bytes(d.val)
    assert val, "some files are held out"
    for content in contents.values():
        assert (content in train) != (content in val), "each file lands in exactly one split"
    assert b"PNG" not in train + val and b"SECRET" not in train + val
    x, y = d.train_batch(5, batch_size=8, seq_len=30, seed=2)
    assert all(w in train for w in window_bytes(x, y))
    for vx, vy in d.val_batches(2, batch_size=4, seq_len=30):
        assert all(w in val for w in window_bytes(vx, vy))


def test_parquet_text_column_and_named_column(tmp_path):
    rows = [f"row {i}: some parquet text for the proxy model." for i in range(300)]
    pq.write_table(
        pa.table({"id": list(range(300)), "text": rows, "body": [r.upper() for r in rows]}), tmp_path / "corpus.parquet"
    )
    d = load_data(tmp_path / "corpus.parquet")
    assert d.vocab_size == 256
    train, val = stream_bytes(d.train), stream_bytes(d.val)
    assert val and all((r.encode() in train) != (r.encode() in val) for r in rows)
    x, y = d.train_batch(0, batch_size=4, seq_len=20, seed=0)
    assert_batch_contract(x, y, 4, 20)
    upper = load_data(f"{tmp_path / 'corpus.parquet'}:body")
    assert b"ROW 1: SOME PARQUET" in stream_bytes(upper.train) + stream_bytes(upper.val)


def test_parquet_folder_with_train_and_validation_files(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["training text " * 10] * 20}), tmp_path / "data" / "train-00000.parquet")
    pq.write_table(pa.table({"text": ["held out text " * 10] * 5}), tmp_path / "data" / "validation-00000.parquet")
    d = load_data(tmp_path)
    assert b"held out" not in stream_bytes(d.train)
    assert b"training" not in stream_bytes(d.val) and b"held out" in stream_bytes(d.val)


# --- batch contract --------------------------------------------------------------------


@pytest.fixture
def shards(tmp_path) -> TokenData:
    write_raw_shard(tmp_path / "train.bin", np.arange(5000))
    write_raw_shard(tmp_path / "val.bin", np.arange(30000, 31000))
    return load_data(tmp_path)


def test_train_batches_are_a_pure_function_of_seed_and_step(shards, tmp_path):
    first = [shards.train_batch(s, 8, 16, seed=7) for s in range(4)]
    # Out of order, interleaved with other seeds, and from a fresh load: identical.
    shards.train_batch(0, 8, 16, seed=8)
    data._load_resolved.cache_clear()
    again = load_data(tmp_path)
    for s in reversed(range(4)):
        x, y = again.train_batch(s, 8, 16, seed=7)
        assert torch.equal(x, first[s][0]) and torch.equal(y, first[s][1])
    assert not torch.equal(first[0][0], first[1][0]), "steps differ"
    assert not torch.equal(first[0][0], shards.train_batch(0, 8, 16, seed=8)[0]), "seeds differ"


def test_validation_set_is_fixed_and_independent_of_training(shards):
    before = shards.val_batches(3, 4, 16)
    for step in range(5):
        shards.train_batch(step, 8, 16, seed=step)
    after = shards.val_batches(3, 4, 16)
    assert len(after) == 3
    for (a, b), (c, d) in zip(before, after):
        assert torch.equal(a, c) and torch.equal(b, d)
    starts = torch.cat([x[:, 0] for x, _ in after])
    assert len(set(starts.tolist())) == 12, "held-out windows are distinct"


def test_load_data_is_cached_per_resolved_source(tmp_path, monkeypatch):
    write_raw_shard(tmp_path / "train.bin", np.arange(100))
    monkeypatch.chdir(tmp_path)
    assert load_data("train.bin") is load_data(str(tmp_path / "train.bin"))


# --- bad input -------------------------------------------------------------------------


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def assert_data_error(source, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        load_data(source)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_path(tmp_path):
    assert_data_error(tmp_path / "nope.bin", "nope.bin", "not found")


def test_empty_file_and_empty_folder(tmp_path):
    assert_data_error(_write(tmp_path / "empty.txt", b""), "empty.txt", "empty")
    assert_data_error(_write(tmp_path / "empty.bin", b""), "empty.bin", "empty")
    (tmp_path / "nothing").mkdir()
    assert_data_error(tmp_path / "nothing", "nothing", "no non-empty text files")


def test_truncated_modded_shard(tmp_path):
    path = write_modded_shard(tmp_path / "fineweb_train_000001.bin", np.arange(100), count=500)
    assert_data_error(path, "fineweb_train_000001.bin", "header says 500 tokens, file has 100")


def test_wrong_magic_and_version(tmp_path):
    bad_magic = write_modded_shard(tmp_path / "fineweb_val_000000.bin", np.arange(100), magic=1234)
    assert_data_error(bad_magic, "fineweb_val_000000.bin", "magic 1234")
    bad_version = write_modded_shard(tmp_path / "shard.bin", np.arange(100), version=7)
    assert_data_error(bad_version, "shard.bin", "version 7")


def test_odd_byte_count(tmp_path):
    assert_data_error(_write(tmp_path / "train.bin", b"\x01\x00\x02"), "train.bin", "odd byte count")


def test_parquet_without_the_column_or_not_parquet(tmp_path):
    pq.write_table(pa.table({"content": ["hello world"] * 10}), tmp_path / "c.parquet")
    assert_data_error(tmp_path / "c.parquet", "c.parquet", "no column 'text'", "content")
    assert_data_error(f"{tmp_path / 'c.parquet'}:body", "no column 'body'")
    assert_data_error(
        _write(tmp_path / "fake.parquet", b"this is not parquet" * 10), "fake.parquet", "not a readable Parquet file"
    )


def test_too_few_tokens_for_one_sequence_in_either_split(tmp_path):
    write_raw_shard(tmp_path / "train.bin", np.arange(100))
    write_raw_shard(tmp_path / "val.bin", np.arange(10))
    d = load_data(tmp_path)
    d.train_batch(0, 2, seq_len=9, seed=0)  # exactly seq_len + 1 = 10 tokens is enough
    d.val_batches(1, 2, seq_len=9)
    with pytest.raises(DataError, match="validation split has 10 tokens.*seq_len\\+1 = 11"):
        d.train_batch(0, 2, seq_len=10, seed=0)
    with pytest.raises(DataError, match="train split has 100 tokens.*seq_len\\+1 = 201"):
        d.val_batches(1, 2, seq_len=200)
    assert str(tmp_path) in str(pytest.raises(DataError, d.check_seq_len, 200).value)
