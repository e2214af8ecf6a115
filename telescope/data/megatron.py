"""Megatron-LM / NeMo indexed datasets: `PREFIX.bin` (tokens end to end) and `PREFIX.idx`.

The index (megatron/core/datasets/indexed_dataset.py): the 9-byte header `MMIDIDX\\0\\0`, a
uint64 version (1), a uint8 dtype code, uint64 sequence and document-index counts, then
int32 sequence lengths, int64 byte pointers into the `.bin`, int64 document indices (the
sequence at which each document starts, then the sequence count), and for multimodal data
one int8 mode per sequence."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from telescope.data.tokens import TokenFile, file_identity, map_file, view
from telescope.errors import DataError

INDEX_HEADER = b"MMIDIDX\x00\x00"
_PREAMBLE = struct.Struct("<9sQBQQ")  # header, version, dtype code, sequences, document indices
DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32", 8: "uint16"}


def megatron_prefix(path: Path) -> Path | None:
    """The dataset prefix when `path` is PREFIX, PREFIX.bin or PREFIX.idx of a Megatron dataset."""
    if path.suffix == ".idx":
        return path.with_suffix("")
    if path.suffix == ".bin" and path.with_suffix(".idx").is_file():
        return path.with_suffix("")
    if not path.exists() and Path(f"{path}.idx").is_file():
        return path
    return None


def megatron_prefixes(root: Path) -> list[Path]:
    return sorted(p.with_suffix("") for p in root.glob("*.idx") if p.is_file())


def open_megatron(prefix: Path) -> TokenFile:
    idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for p in (idx_path, bin_path):
        if not p.is_file():
            raise DataError(f"{p}: not found (a Megatron dataset needs both {prefix.name}.bin and {prefix.name}.idx)")
    index = map_file(idx_path)
    if len(index) < _PREAMBLE.size:
        raise DataError(f"{idx_path}: truncated index ({len(index)} bytes; the header alone is {_PREAMBLE.size})")
    header, version, code, n_seq, n_doc = _PREAMBLE.unpack_from(index)
    if header != INDEX_HEADER:
        raise DataError(f"{idx_path}: not a Megatron index (no MMIDIDX header)")
    if version != 1:
        raise DataError(f"{idx_path}: unsupported index version {version} (expected 1)")
    if code not in DTYPES:
        raise DataError(f"{idx_path}: unknown dtype code {code}")
    dtype = np.dtype(DTYPES[code])
    if dtype.kind == "f":
        raise DataError(f"{idx_path}: holds {dtype.name} values, not integer token ids")
    need = _PREAMBLE.size + 12 * n_seq + 8 * n_doc
    if len(index) not in (need, need + n_seq):
        raise DataError(
            f"{idx_path}: truncated or malformed index: {n_seq} sequences and {n_doc} document indices "
            f"take {need} bytes, the file has {len(index)}"
        )
    if n_seq == 0:
        raise DataError(f"{idx_path}: holds no sequences")
    lengths = view(index, "<i4", _PREAMBLE.size, n_seq).astype(np.int64)
    pointers = view(index, "<i8", _PREAMBLE.size + 4 * n_seq, n_seq)
    doc_index = view(index, "<i8", _PREAMBLE.size + 12 * n_seq, n_doc)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])
    bin_size = bin_path.stat().st_size
    if bin_size != total * dtype.itemsize:
        raise DataError(
            f"{bin_path}: {bin_size} bytes, but {idx_path.name} describes {total} {dtype.name} tokens "
            f"({total * dtype.itemsize} bytes)"
        )
    if (lengths < 0).any() or not np.array_equal(pointers, starts[:-1] * dtype.itemsize):
        raise DataError(f"{idx_path}: sequence pointers do not match the sequence lengths")
    if n_doc < 2 or doc_index[0] != 0 or doc_index[-1] != n_seq or (np.diff(doc_index) < 0).any():
        raise DataError(f"{idx_path}: document indices must rise from 0 to the sequence count ({n_seq})")
    mapped = map_file(bin_path)
    docs = starts[doc_index]
    return TokenFile(
        bin_path, view(mapped, dtype, 0, total), docs, (mapped,), file_identity(bin_path, f"megatron-{code}")
    )
