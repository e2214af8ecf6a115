"""The user's tokenized data as it is: every token format, tokens above 65,535, the same
documents giving the same batches in every format, and bad input as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from micro import run_micro_sweep

from telescope.data import load as loading
from telescope.data import load_data, preparing, tokenized, tokens
from telescope.data.testing import write_hf_arrow, write_mds, write_megatron, write_parquet_tokens
from telescope.errors import ConfigError, DataError

TOP = 100_256  # o200k-sized vocabulary: tokens far above uint16


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("TELESCOPE_CACHE", str(tmp_path / "cache"))
    loading._load_resolved.cache_clear()
    yield
    loading._load_resolved.cache_clear()


def documents(n: int = 300, seed: int = 0, equal: int | None = None) -> list[np.ndarray]:
    """Documents whose tokens encode their document (token // 300 = document), up to TOP."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(n):
        length = equal or int(rng.integers(40, 160))
        docs.append(70_000 + d * 100 + rng.integers(0, 100, size=length))
    docs[-1][-1] = TOP
    return docs


def batches(d, seq_len: int = 24) -> list[torch.Tensor]:
    train = [torch.cat(d.train_batch(step, 8, seq_len, seed=3)) for step in range(3)]
    return train + [torch.cat(pair) for pair in d.val_batches(2, 4, seq_len)]


def same_batches(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(batches(a), batches(b), strict=True))


def doc_of(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t == TOP, t.new_tensor(70_000 + 299 * 100), t).sub(70_000).div(100, rounding_mode="floor")


def windows_stay_in_documents(d, seq_len: int = 24) -> bool:
    for x, y in [d.train_batch(s, 16, seq_len, seed=0) for s in range(4)] + d.val_batches(2, 8, seq_len):
        full = doc_of(torch.cat([x, y[:, -1:]], dim=1))
        if not (full == full[:, :1]).all():
            return False
    return True


def document_formats(tmp_path: Path, docs: list[np.ndarray], per_shard: int) -> dict[str, str]:
    """The same documents as Megatron, Hugging Face Arrow, Parquet and MDS (`per_shard` samples a shard file)."""
    return {
        "megatron": str(write_megatron(tmp_path / "corpus_text_document", docs)),
        "arrow": f"{write_hf_arrow(tmp_path / 'hf', docs, rows_per_batch=64)}:input_ids",
        "parquet": f"{write_parquet_tokens(tmp_path / 'corpus.parquet', docs)}:input_ids",
        "mds": str(write_mds(tmp_path / "mds", docs, samples_per_shard=per_shard)),
    }


@pytest.mark.parametrize("cross_documents", [True, False])
def test_same_documents_give_the_same_batches_in_every_document_format(tmp_path, cross_documents):
    docs = documents()
    # Windows never cross a file: MDS shards hold the same boundaries as one Megatron file only
    # when there is one shard, or when windows stay inside documents anyway.
    sources = document_formats(tmp_path, docs, per_shard=10_000 if cross_documents else 128)
    loaded = {name: load_data(src, cross_documents=cross_documents) for name, src in sources.items()}
    reference = loaded.pop("megatron")
    assert reference.vocab_size == TOP + 1
    assert str(tmp_path / "corpus_text_document.bin") in reference.vocab_source
    assert reference.val_tokens > 0 and reference.train_tokens + reference.val_tokens == sum(map(len, docs))
    assert windows_stay_in_documents(reference) is not cross_documents
    for name, d in loaded.items():
        assert d.vocab_size == TOP + 1, name
        assert (d.train_tokens, d.val_tokens) == (reference.train_tokens, reference.val_tokens), name
        assert same_batches(d, reference), name


def test_parquet_of_many_row_groups_gives_the_same_batches(tmp_path):
    docs = documents()
    megatron = load_data(write_megatron(tmp_path / "m", docs))
    parquet = write_parquet_tokens(tmp_path / "small_groups.parquet", docs, rows_per_group=7)
    assert pq.ParquetFile(parquet).num_row_groups == 43
    d = load_data(f"{parquet}:input_ids")
    assert d.vocab_size == TOP + 1 and same_batches(d, megatron)
    loading._load_resolved.cache_clear()
    assert same_batches(load_data(f"{parquet}:input_ids"), megatron), "reopened from the converted cache"


def test_megatron_by_prefix_bin_or_idx_and_2d_npy_agree(tmp_path):
    docs = documents(equal=64)
    prefix = write_megatron(tmp_path / "m", docs, dtype="int32")
    np.save(tmp_path / "rows.npy", np.stack(docs).astype(np.uint32))
    by_prefix = load_data(prefix, cross_documents=False)
    for source in (f"{prefix}.bin", f"{prefix}.idx"):
        loading._load_resolved.cache_clear()
        assert same_batches(load_data(source, cross_documents=False), by_prefix)
    rows = load_data(tmp_path / "rows.npy", cross_documents=False)
    assert rows.vocab_size == TOP + 1 and same_batches(rows, by_prefix)
    assert windows_stay_in_documents(rows)


def test_streams_without_documents_agree_npy_and_stated_dtype_bin(tmp_path):
    tokens = np.concatenate(documents())
    np.save(tmp_path / "stream.npy", tokens.astype(np.int64))
    tokens.astype("<u4").tofile(tmp_path / "stream_u32.bin")
    tokens.astype("<i4").tofile(tmp_path / "stream_i32.bin")
    npy = load_data(tmp_path / "stream.npy")
    u32 = load_data(tmp_path / "stream_u32.bin", dtype="uint32")
    i32 = load_data(tmp_path / "stream_i32.bin", dtype="int32")
    for d in (npy, u32, i32):
        assert d.vocab_size == TOP + 1
        assert d.val_tokens == len(tokens) // 10, "one file without documents: its tail is held out"
    assert same_batches(npy, u32) and same_batches(npy, i32)


def test_uint32_bin_without_a_stated_dtype_is_refused_not_misread(tmp_path):
    np.arange(1000, 3000, dtype="<u4").tofile(tmp_path / "train.bin")
    with pytest.raises(DataError, match=r"looks like 32-bit tokens.*data_dtype"):
        load_data(tmp_path / "train.bin")


def test_uint16_vocab_is_the_largest_token_not_gpt2(tmp_path):
    np.array([1, 5, 1256, 7] * 100, dtype="<u2").tofile(tmp_path / "train.bin")
    d = load_data(tmp_path / "train.bin")
    assert d.vocab_size == 1257
    d.check_vocab(32_000)
    with pytest.raises(ConfigError, match=r"model.vocab_size is 1000 .*largest token is 1256, in .*train.bin.*= 1257"):
        d.check_vocab(1000)


def test_validation_files_by_name_and_hf_dataset_dict_splits(tmp_path):
    docs = documents()
    write_hf_arrow(tmp_path / "dd" / "train", docs[:250])
    write_hf_arrow(tmp_path / "dd" / "validation", docs[250:])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    d = load_data(f"{tmp_path / 'dd'}:input_ids")
    assert d.val_tokens == sum(map(len, docs[250:]))
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "train.npy", np.concatenate(docs[:250]))
    np.save(tmp_path / "npy" / "val.npy", np.concatenate(docs[250:]))
    assert same_batches(load_data(tmp_path / "npy"), d)


def test_metadata_files_are_never_text(tmp_path):
    write_hf_arrow(tmp_path / "hf", documents())
    with pytest.raises(DataError, match="no column 'text'.*input_ids"):
        load_data(tmp_path / "hf")
    d = load_data(f"{tmp_path / 'hf'}:input_ids")
    assert d.vocab_size == TOP + 1


# --- the user's tokenizer --------------------------------------------------------------


def train_bpe(path: Path, texts: list[str], vocab: int = 400) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["[UNK]", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return path


def text_folder(root: Path, n: int = 150) -> Path:
    words = "the quick brown fox jumps over a lazy dog while muon keeps the update orthogonal".split()
    rng = np.random.default_rng(1)
    for i in range(n):
        body = " ".join(rng.choice(words, size=60))
        (root / f"doc{i:03d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"doc{i:03d}.txt").write_text(f"document {i}: {body}\n")
    return root


def test_text_through_a_tokenizer_is_cached_and_redone_when_text_or_tokenizer_change(tmp_path, monkeypatch):
    corpus = text_folder(tmp_path / "corpus")
    tok = train_bpe(tmp_path / "tokenizer.json", [p.read_text() for p in corpus.iterdir()])
    first = load_data(corpus, tokenizer=tok)
    from tokenizers import Tokenizer

    assert first.vocab_size == Tokenizer.from_file(str(tok)).get_vocab_size() and first.vocab_size > 256
    assert 0 < first.val_tokens < first.train_tokens
    calls = []
    real_encode = tokenized._encode
    monkeypatch.setattr(tokenized, "_encode", lambda *a: (calls.append(1), real_encode(*a)))
    loading._load_resolved.cache_clear()
    again = load_data(corpus, tokenizer=tok)
    assert calls == [] and same_batches(again, first), "a second run reads the cache"
    (corpus / "doc007.txt").write_text("document 7 changed: the fox sleeps\n")
    loading._load_resolved.cache_clear()
    load_data(corpus, tokenizer=tok)
    assert calls, "a changed file is tokenized again"
    calls.clear()
    train_bpe(tok, [p.read_text() for p in corpus.iterdir()], vocab=300)
    loading._load_resolved.cache_clear()
    assert load_data(corpus, tokenizer=tok).vocab_size < first.vocab_size and calls, "a changed tokenizer too"


# --- micro sweeps end to end -----------------------------------------------------------


def assert_finished(result: dict, vocab: int) -> None:
    assert result["calibration_width"] == 64 and len(result["levels"]) == 3
    assert all(level["failed"] == 0 for level in result["levels"])
    assert set(result["best"]) == {"lr", "weight_decay"}
    assert 0 < result["best_loss"] < np.log(vocab) + 1


def test_micro_sweep_on_a_megatron_dataset(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 3000, size=int(rng.integers(60, 200))) for _ in range(400)]
    prefix = write_megatron(tmp_path / "ds_text_document", docs, dtype="uint16")
    result = run_micro_sweep(
        f"sqlite:///{tmp_path / 's.db'}",
        tmp_path / "store",
        model={"vocab_size": 3000},
        train={"data": str(prefix), "cross_documents": False},
    )
    assert_finished(result, vocab=3000)


def test_micro_sweep_on_text_through_a_trained_bpe(tmp_path):
    corpus = text_folder(tmp_path / "corpus", n=200)
    tok = train_bpe(tmp_path / "tokenizer.json", [p.read_text() for p in corpus.iterdir()])
    result = run_micro_sweep(
        f"sqlite:///{tmp_path / 's.db'}",
        tmp_path / "store",
        model={"vocab_size": 400},
        train={"data": str(corpus), "tokenizer": str(tok)},
    )
    assert_finished(result, vocab=400)
    assert result["best_loss"] < np.log(400) - 1, "the proxies learn the tokenized text"


def test_readme_data_table_has_one_line_per_format():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Training data", 1)[1]
    rows = [line for line in section.split("\n\n", 3)[2].splitlines() if line.startswith("| ") and "---" not in line][
        1:
    ]
    formats = {
        "stdlib": "`stdlib`",
        "nanoGPT .bin": "nanoGPT",
        ".npy": "`FILE.npy`",
        "Megatron": "Megatron",
        "Arrow": "Arrow IPC",
        "Parquet tokens": "list-of-integers column, one document per row; converted",
        "MDS": "MDS",
        "text": "`FILE.txt`",
        "Parquet text": "text column",
        "tokenizer": "tokenizer.json",
    }
    for name, marker in formats.items():
        assert sum(marker in row for row in rows) == 1, name
    assert len(rows) == len(formats)


# --- bad input -------------------------------------------------------------------------


def refused(source, *fragments: str, **settings) -> None:
    loading._load_resolved.cache_clear()
    with pytest.raises(DataError) as info:
        load_data(source, **settings)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert re.search(fragment, message), (fragment, message)


def test_bad_megatron_datasets(tmp_path):
    prefix = write_megatron(tmp_path / "m", documents(20))
    idx = Path(f"{prefix}.idx").read_bytes()
    Path(f"{prefix}.idx").write_bytes(idx[:20])
    refused(prefix, r"m\.idx", "truncated index")
    Path(f"{prefix}.idx").write_bytes(idx[:-8])
    refused(prefix, r"m\.idx", "truncated or malformed")
    Path(f"{prefix}.idx").write_bytes(idx)
    Path(f"{prefix}.bin").write_bytes(Path(f"{prefix}.bin").read_bytes()[:-4])
    refused(prefix, r"m\.bin", "bytes, but m.idx describes")
    Path(f"{prefix}.bin").unlink()
    refused(prefix, r"m\.bin", "not found")


def test_bad_token_files(tmp_path):
    (tmp_path / "seven.bin").write_bytes(b"\x01" * 7)
    refused(tmp_path / "seven.bin", "seven.bin", "'uint32'.*does not divide the file size", dtype="uint32")
    np.save(tmp_path / "ragged.npy", np.array([np.arange(3), np.arange(5)], dtype=object))
    refused(tmp_path / "ragged.npy", "ragged.npy", "ragged")
    np.save(tmp_path / "floats.npy", np.ones(100))
    refused(tmp_path / "floats.npy", "floats.npy", "float64 values, not integer token ids")
    np.save(tmp_path / "stream.npy", np.arange(100))
    refused(tmp_path / "stream.npy", "data_dtype applies to raw .bin", dtype="uint32")


def test_bad_columns(tmp_path):
    write_parquet_tokens(tmp_path / "t.parquet", documents(20))
    refused(f"{tmp_path / 't.parquet'}:ids", "no column 'ids'", "input_ids")
    pq.write_table(pa.table({"input_ids": pa.array([[], []], type=pa.list_(pa.int32()))}), tmp_path / "e.parquet")
    refused(f"{tmp_path / 'e.parquet'}:input_ids", "e.parquet", "'input_ids' is empty")
    assert not list((tmp_path / "cache").rglob("*.tokens")), "nothing cached for bad input"
    write_hf_arrow(tmp_path / "hf", documents(20))
    refused(f"{tmp_path / 'hf'}:labels", "no column 'labels'")


def test_bad_mds(tmp_path):
    docs = documents(20)
    plain = write_mds(tmp_path / "plain", docs)
    index = json.loads((plain / "index.json").read_text())
    for shard in index["shards"]:
        shard["column_encodings"][1] = "str"
    (plain / "index.json").write_text(json.dumps(index))
    refused(plain, "shard.00000.mds", "no token column")
    refused(write_mds(tmp_path / "zstd", docs, compression="zstd"), "compressed MDS shards")
    fixed = write_mds(tmp_path / "fixed", docs, encoding="ndarray:uint32")
    assert load_data(fixed).vocab_size == TOP + 1


@pytest.mark.parametrize("read_bytes, gap_bytes", [(1 << 22, 1 << 16), (64, 4)])
def test_token_range_is_exact_wherever_the_tokens_lie(tmp_path, monkeypatch, read_bytes, gap_bytes):
    """MDS samples are read a stretch of the file at a time: with the default buffer (more
    samples than one read takes), and with a tiny one (samples split across reads, every
    header gap too long to read through), the largest token and a negative one are found."""
    monkeypatch.setattr(tokens, "_READ_BYTES", read_bytes)
    monkeypatch.setattr(tokens, "_GAP_BYTES", gap_bytes)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, size=int(rng.integers(40, 160))) for _ in range(1500)]
    docs[1200][30] = 123_456
    assert load_data(write_mds(tmp_path / "mds", docs)).vocab_size == 123_457
    docs[1300][5] = -7
    refused(write_mds(tmp_path / "signed", docs, dtype="int32"), r"shard\.00000\.mds", r"negative token id \(-7\)")
    np.save(tmp_path / "signed.npy", np.concatenate(docs).astype(np.int64))
    refused(tmp_path / "signed.npy", r"signed\.npy", r"negative token id \(-7\)")


def test_bad_tokenizer_and_empty_folders(tmp_path):
    corpus = text_folder(tmp_path / "corpus", n=5)
    refused(corpus, "nope.json", "tokenizer file not found", tokenizer=tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    refused(corpus, "bad.json", "not a tokenizers tokenizer.json", tokenizer=tmp_path / "bad.json")
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "blob.dat").write_bytes(b"\x00\x01" * 100)
    (tmp_path / "binary" / "dataset_info.json").write_text('{"description": "metadata"}')
    refused(tmp_path / "binary", "no non-empty text files and no token files")


def test_bad_data_from_the_cli_is_one_line_and_nothing_is_written(tmp_path):
    from micro import write_micro_config
    from typer.testing import CliRunner

    from telescope.cli.main import app

    prefix = write_megatron(tmp_path / "m", documents(50))
    cases = [({"data": str(prefix)}, r"model.vocab_size is 256 .*largest token is 100256, in .*m\.bin.*= 100257")]
    np.arange(70000, 80000, dtype="<u4").tofile(tmp_path / "u32.bin")
    cases.append(
        ({"data": str(tmp_path / "u32.bin"), "data_dtype": "uint32"}, r"largest token is 79999, in .*u32\.bin.*= 80000")
    )
    cases.append(({"data": str(tmp_path / "u32.bin")}, r"u32\.bin: looks like 32-bit tokens"))
    cases.append(
        (
            {"data": str(tmp_path / "u32.bin"), "data_dtype": "int64"},
            "train.data_dtype: must be .uint16. or .uint32. or .int32., got .int64.",
        )
    )
    for train, named in cases:
        config = write_micro_config(tmp_path / "c.toml", train=train)
        db, store = tmp_path / "t.db", tmp_path / "metrics"
        result = CliRunner().invoke(app, ["sweep", str(config), "--db", str(db), "--store", str(store)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and re.search(named, lines[0]), result.output
        assert not db.exists() and not store.exists()


def test_a_first_open_says_what_it_prepares_once_and_a_later_open_says_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(preparing, "SHOW_BYTES", 0)  # as if each file were gigabytes
    sources = document_formats(tmp_path, documents(), per_shard=100)
    expected = {
        "megatron": "finding the largest token of corpus_text_document.bin",
        "arrow": "finding the largest token of data-00000-of-00001.arrow",
        "parquet": "converting the input_ids column of corpus.parquet",
        "mds": "finding the largest token of shard.00000.mds",
    }
    for kind, line in expected.items():
        load_data(sources[kind])
        assert f"{line} (0.0 GiB; once, later opens read the cache)" in capfd.readouterr().err
    loading._load_resolved.cache_clear()  # a new process: the token ranges come from the cache
    for source in sources.values():
        load_data(source)
    assert capfd.readouterr().err == ""


def test_a_later_open_reads_the_layout_from_the_cache_not_the_headers_spread_through_the_file(tmp_path, monkeypatch):
    from telescope.data import arrow, mds

    sources = document_formats(tmp_path, documents(), per_shard=100)
    first = {kind: load_data(sources[kind]) for kind in ("arrow", "mds")}
    loading._load_resolved.cache_clear()

    def unread(*args, **kwargs):
        raise AssertionError("read the headers again")

    monkeypatch.setattr(arrow, "_arrow_layout", unread)
    monkeypatch.setattr(mds, "_shard_layout", unread)
    for kind, data in first.items():
        assert same_batches(load_data(sources[kind]), data)
    loading._load_resolved.cache_clear()
    write_mds(tmp_path / "mds", documents(seed=1), samples_per_shard=100)  # changed shards: read again
    with pytest.raises(AssertionError, match="read the headers again"):
        load_data(sources["mds"])


def test_an_unreadable_layout_cache_is_read_again_from_the_file(tmp_path):
    sources = document_formats(tmp_path, documents(), per_shard=100)
    first = load_data(sources["mds"])
    for cached in (tmp_path / "cache").rglob("*.npz"):
        cached.write_bytes(b"PK\x03\x04 not a zip")
    loading._load_resolved.cache_clear()
    assert same_batches(load_data(sources["mds"]), first)
