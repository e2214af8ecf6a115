"""MosaicML Streaming (MDS) datasets: `index.json` and uncompressed shards with a token
column of `ndarray` encoding (streaming/base/format/mds).

A shard: uint32 sample count, uint32 byte offsets of each sample and of the end, the JSON
config, then the samples. A sample: one uint32 size per variable-size column, then each
column's bytes in column order. An `ndarray` value: a dtype byte unless the encoding fixes
the dtype (`ndarray:int32`), a shape byte (ndim << 2 | shape width) and the shape unless it
fixes the shape (`ndarray:int32:2048`), then the values. Each sample is a document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from telescope.data.tokens import Runs, TokenFile, file_identity, map_file, release, remembered_layout, view
from telescope.errors import DataError

VALUE_DTYPES = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 32: "uint32", 33: "int32", 64: "uint64", 65: "int64"}
_FLOAT_CODES = {18, 34, 66}


def is_mds(root: Path) -> bool:
    return (root / "index.json").is_file()


def _index(root: Path) -> list[dict[str, Any]]:
    path = root / "index.json"
    try:
        shards = json.loads(path.read_text())["shards"]
        assert isinstance(shards, list) and all(isinstance(s, dict) for s in shards)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise DataError(f"{path}: not an MDS index (no list of shards)") from None
    if not shards:
        raise DataError(f"{path}: lists no shards")
    return shards


def open_mds(root: Path, column: str | None) -> list[TokenFile]:
    """One TokenFile per shard, in index order."""
    return [_open_shard(root, shard, column) for shard in _index(root)]


def _token_column(where: Path, shard: dict[str, Any], column: str | None) -> int:
    names, encodings = shard.get("column_names", []), shard.get("column_encodings", [])
    arrays = [i for i, e in enumerate(encodings) if e.split(":")[0] == "ndarray"]
    listing = ", ".join(f"{n}:{e}" for n, e in zip(names, encodings)) or "none"
    if column is not None:
        if column not in names:
            raise DataError(f"{where}: no column {column!r} (columns: {listing})")
        if names.index(column) not in arrays:
            raise DataError(f"{where}: column {column!r} is not an ndarray of token ids (columns: {listing})")
        return names.index(column)
    if len(arrays) != 1:
        what = "no token column (an ndarray of integers)" if not arrays else "several ndarray columns"
        raise DataError(f"{where}: {what}; name it as PATH:COLUMN (columns: {listing})")
    return arrays[0]


def _open_shard(root: Path, shard: dict[str, Any], column: str | None) -> TokenFile:
    try:
        basename = shard["raw_data"]["basename"]
    except (KeyError, TypeError):
        raise DataError(f"{root / 'index.json'}: a shard without raw_data") from None
    path = root / basename
    if shard.get("compression") or shard.get("zip_data") and not path.is_file():
        raise DataError(
            f"{path}: compressed MDS shards ({shard.get('compression')}) are not read; write them uncompressed"
        )
    if shard.get("format", "mds") != "mds":
        raise DataError(f"{path}: shard format {shard.get('format')!r}, not mds")
    if not path.is_file():
        raise DataError(f"{path}: not found (listed in index.json)")
    col = _token_column(path, shard, column)
    encoding, sizes = shard["column_encodings"][col], shard["column_sizes"]
    identity = file_identity(path, f"mds-{col}-{encoding}-{sizes}")
    layout = remembered_layout(identity, lambda: _shard_layout(path, col, encoding, sizes))
    mapped = map_file(path)
    tokens = Runs(mapped, np.dtype(str(layout["dtype"])), layout["starts"], layout["counts"])
    return TokenFile(path, tokens, np.concatenate([[0], np.cumsum(layout["counts"])]), (mapped,), identity)


def _shard_layout(path: Path, col: int, encoding: str, sizes: list[int | None]) -> dict[str, np.ndarray]:
    """Where each sample's tokens lie in the shard, and their dtype, read from its headers."""
    variable = [i for i, s in enumerate(sizes) if s is None]
    mapped = map_file(path)
    u8 = np.frombuffer(mapped, dtype=np.uint8)
    n = int(view(mapped, "<u4", 0, 1)[0]) if len(mapped) >= 4 else -1
    if n <= 0 or len(mapped) < 4 * (n + 2):
        raise DataError(f"{path}: truncated or empty MDS shard")
    offsets = view(mapped, "<u4", 4, n + 1).astype(np.int64)
    if offsets[-1] != len(mapped) or (np.diff(offsets) < 4 * len(variable)).any():
        raise DataError(
            f"{path}: truncated MDS shard (sample offsets end at {offsets[-1]}, file has {len(mapped)} bytes)"
        )
    starts = offsets[:-1]

    def u32_at(address: np.ndarray) -> np.ndarray:
        """uint32 values at byte addresses of any alignment: one aligned view per alignment."""
        out = np.empty(len(address), dtype=np.int64)
        for a in range(4):
            at = address % 4 == a
            out[at] = view(mapped, "<u4", a, (len(mapped) - a) // 4)[(address[at] - a) // 4]
        return out

    column_bytes = [
        u32_at(starts + 4 * variable.index(i)) if s is None else np.full(n, s, dtype=np.int64)
        for i, s in enumerate(sizes)
    ]
    data = starts + 4 * len(variable) + sum(column_bytes[:col], np.zeros(n, dtype=np.int64))
    _, *args = encoding.split(":") + [None, None]
    dtype_name, shape = args[0], args[1]
    head = np.zeros(n, dtype=np.int64)
    if dtype_name is None:
        codes = u8[data]
        if np.isin(codes, list(_FLOAT_CODES)).any():
            raise DataError(f"{path}: token column holds floats, not integer token ids")
        if not np.isin(codes, list(VALUE_DTYPES)).all() or (codes != codes[0]).any():
            raise DataError(f"{path}: token column has unknown or mixed dtypes")
        dtype_name, head = VALUE_DTYPES[int(codes[0])], head + 1
    if dtype_name not in VALUE_DTYPES.values():
        raise DataError(f"{path}: token column holds {dtype_name}, not integer token ids")
    if shape is None:
        shape_byte = u8[data + head].astype(np.int64)
        head = head + 1 + (shape_byte >> 2) * (1 << (shape_byte & 3))
    itemsize = np.dtype(dtype_name).itemsize
    counts, remainder = np.divmod(column_bytes[col] - head, itemsize)
    if remainder.any() or (counts < 0).any():
        raise DataError(f"{path}: token column sizes do not match its {dtype_name} values")
    if counts.sum() == 0:
        raise DataError(f"{path}: token column is empty")
    release((mapped,))  # the sample headers just read touched every page
    return {"dtype": np.array(np.dtype(dtype_name).newbyteorder("<").str), "starts": data + head, "counts": counts}
