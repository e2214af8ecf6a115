"""Writers for every token format the data readers take, written from the formats' own
specs (Megatron's indexed_dataset.py, MosaicML's MDS writer, Hugging Face's save_to_disk
layout), so the tests and benchmarks/bench_data.py need none of those libraries. Each takes
an iterable of documents and streams it to disk."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MEGATRON_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint16": 8}
MDS_CODES = {"uint8": 8, "int8": 9, "uint16": 16, "int16": 17, "uint32": 32, "int32": 33, "uint64": 64, "int64": 65}


def _batched(docs: Iterable[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    it = iter(docs)
    while batch := list(itertools.islice(it, n)):
        yield batch


def write_megatron(prefix: Path, docs: Iterable[np.ndarray], dtype: str = "int32") -> Path:
    """PREFIX.bin and PREFIX.idx, one sequence per document."""
    lengths = []
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())
            lengths.append(len(d))
    sizes = np.array(lengths, dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)[:-1]]) * np.dtype(dtype).itemsize
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, MEGATRON_CODES[dtype], len(sizes), len(sizes) + 1))
        f.write(
            sizes.tobytes() + pointers.astype(np.int64).tobytes() + np.arange(len(sizes) + 1, dtype=np.int64).tobytes()
        )
    return prefix


def _token_batch(docs: list[np.ndarray], dtype: str, column: str) -> pa.RecordBatch:
    values = pa.array(np.concatenate(docs).astype(dtype, copy=False))
    offsets = pa.array(np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int32))
    return pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values)], [column])


def write_hf_arrow(folder: Path, docs: Iterable[np.ndarray], dtype: str = "int32", rows_per_batch: int = 1000) -> Path:
    """A `datasets.save_to_disk` folder: an Arrow IPC stream, dataset_info.json and state.json."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "data-00000-of-00001.arrow"
    schema = pa.schema([("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(dtype))))])
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in _batched(docs, rows_per_batch):
            writer.write_batch(_token_batch(batch, dtype, "input_ids"))
    (folder / "dataset_info.json").write_text(json.dumps({"description": "tokens", "features": {"input_ids": {}}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}], "_split": None}))
    return folder


def write_parquet_tokens(
    path: Path, docs: Iterable[np.ndarray], dtype: str = "int64", rows_per_group: int = 10_000
) -> Path:
    """Column `input_ids`, a list of integers per document."""
    schema = pa.schema([("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(dtype))))])
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batched(docs, rows_per_group):
            writer.write_batch(_token_batch(batch, dtype, "input_ids"))
    return path


def write_mds(
    folder: Path,
    docs: Iterable[np.ndarray],
    dtype: str = "uint32",
    encoding: str = "ndarray",
    compression: str | None = None,
    samples_per_shard: int = 10_000,
) -> Path:
    """index.json and shards of samples {"id": int32, "tokens": ndarray} (columns sorted, as MDSWriter does)."""
    folder.mkdir(parents=True, exist_ok=True)
    names, encodings, sizes = ["id", "tokens"], ["int32", encoding], [4, None]
    columns = {
        "column_encodings": encodings,
        "column_names": names,
        "column_sizes": sizes,
        "compression": compression,
        "format": "mds",
        "hashes": [],
        "size_limit": None,
        "version": 2,
    }
    config = json.dumps(columns, sort_keys=True).encode()
    shards, first = [], 0
    for part in _batched(docs, samples_per_shard):
        samples = []
        for i, d in enumerate(part):
            value = np.asarray(d, dtype=dtype)
            head = b"" if ":" in encoding else bytes([MDS_CODES[dtype]])
            body = head + bytes([(1 << 2) | 2]) + np.array([len(value)], dtype=np.uint32).tobytes() + value.tobytes()
            samples.append(struct.pack("<I", len(body)) + struct.pack("<i", first + i) + body)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in samples])]) + 4 + 4 * (len(part) + 1) + len(config)
        basename = f"shard.{len(shards):05d}.mds"
        with open(folder / basename, "wb") as f:
            f.write(struct.pack("<I", len(part)) + offsets.astype(np.uint32).tobytes() + config)
            for sample in samples:
                f.write(sample)
        raw = {"basename": basename, "bytes": int(offsets[-1]), "hashes": {}}
        shards.append({**columns, "raw_data": raw, "samples": len(part), "zip_data": None})
        first += len(part)
    (folder / "index.json").write_text(json.dumps({"shards": shards, "version": 2}))
    return folder
