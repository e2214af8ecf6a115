"""Writers for every token format the data readers take, from the formats' own specs
(Megatron's indexed_dataset.py, MosaicML's MDS writer, Hugging Face's save_to_disk layout),
so tests and the data benchmark need none of those libraries."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MEGATRON_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint16": 8}
MDS_CODES = {"uint8": 8, "int8": 9, "uint16": 16, "int16": 17, "uint32": 32, "int32": 33, "uint64": 64, "int64": 65}


def write_megatron(prefix: Path, docs: Sequence[np.ndarray], dtype: str = "int32") -> Path:
    """PREFIX.bin and PREFIX.idx, one sequence per document."""
    lengths = np.array([len(d) for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * np.dtype(dtype).itemsize
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, MEGATRON_CODES[dtype], len(docs), len(docs) + 1))
        f.write(lengths.tobytes() + pointers.astype(np.int64).tobytes() + np.arange(len(docs) + 1, dtype=np.int64).tobytes())
    return prefix


def _token_table(docs: Sequence[np.ndarray], dtype: str, column: str) -> pa.Table:
    values = pa.array(np.concatenate(docs).astype(dtype))
    offsets = pa.array(np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int32))
    return pa.table({column: pa.ListArray.from_arrays(offsets, values)})


def write_hf_arrow(folder: Path, docs: Sequence[np.ndarray], dtype: str = "int32", rows_per_batch: int = 1000) -> Path:
    """A `datasets.save_to_disk` folder: Arrow IPC stream, dataset_info.json, state.json."""
    folder.mkdir(parents=True, exist_ok=True)
    table = _token_table(docs, dtype, "input_ids")
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows_per_batch):
            writer.write_batch(batch)
    (folder / "dataset_info.json").write_text(json.dumps({"description": "tokens", "features": {"input_ids": {}}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}], "_split": None}))
    return folder


def write_parquet_tokens(path: Path, docs: Sequence[np.ndarray], dtype: str = "int64") -> Path:
    pq.write_table(_token_table(docs, dtype, "input_ids"), path)
    return path


def write_mds(folder: Path, docs: Sequence[np.ndarray], dtype: str = "uint32", encoding: str = "ndarray",
              compression: str | None = None, samples_per_shard: int = 10_000) -> Path:
    """index.json and shards of samples {"id": int32, "tokens": ndarray} (columns sorted, as MDSWriter does)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, len(docs), samples_per_shard):
        part = docs[s : s + samples_per_shard]
        names, encodings, sizes = ["id", "tokens"], ["int32", encoding], [4, None]
        config = json.dumps({"column_encodings": encodings, "column_names": names, "column_sizes": sizes,
                             "compression": compression, "format": "mds", "hashes": [], "size_limit": None,
                             "version": 2}, sort_keys=True).encode()
        samples = []
        for i, d in enumerate(part):
            value = np.asarray(d, dtype=dtype)
            head = b"" if ":" in encoding else bytes([MDS_CODES[dtype]])
            shape = np.array([len(value)], dtype=np.uint32)
            body = head + bytes([(1 << 2) | 2]) + shape.tobytes() + value.tobytes()
            samples.append(struct.pack("<I", len(body)) + struct.pack("<i", s + i) + body)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in samples])]) + 4 + 4 * (len(part) + 1) + len(config)
        basename = f"shard.{s // samples_per_shard:05d}.mds"
        data = struct.pack("<I", len(part)) + offsets.astype(np.uint32).tobytes() + config + b"".join(samples)
        (folder / basename).write_bytes(data)
        shards.append({"column_encodings": encodings, "column_names": names, "column_sizes": sizes,
                       "compression": compression, "format": "mds", "hashes": [],
                       "raw_data": {"basename": basename, "bytes": len(data), "hashes": {}},
                       "samples": len(part), "size_limit": None, "version": 2, "zip_data": None})
    (folder / "index.json").write_text(json.dumps({"shards": shards, "version": 2}))
    return folder
