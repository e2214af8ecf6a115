"""Arrow and Parquet: a token-id column (list of integers, one document per row), or a
text column (telescope.data.text). Read with pyarrow alone.

Arrow IPC files (a Hugging Face `save_to_disk` folder's `data-*.arrow`) are mapped and read
without copying. Parquet pages are encoded, so a Parquet token column is written once to a
raw token file in the cache (keyed by the file's path, size and mtime) and mapped from there.
Reading it lazily instead would decode a whole row group for every window a batch draws,
and its documents' lengths (which the split needs) are only known by decoding it all anyway.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from telescope.data.preparing import preparing
from telescope.data.text import cache_dir, visible_files
from telescope.data.tokens import (
    Runs,
    TokenFile,
    bounds,
    file_identity,
    map_file,
    remember_range,
    remembered_layout,
    view,
)
from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

_CONVERTED_FORMAT = 1
DECODE_THREADS = 8  # row groups decoded at once by a first open (memory: one row group each)


def is_token_type(kind: Any) -> bool:
    import pyarrow as pa

    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    return any(is_list(kind) for is_list in lists) and pa.types.is_integer(kind.value_type)


def _check_column(path: Path, schema: Any, column: str) -> Any:
    if column not in schema.names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(schema.names) or 'none'})")
    return schema.field(column).type


# --- Arrow IPC -------------------------------------------------------------------------


def arrow_files(root: Path) -> list[Path]:
    """A folder's `.arrow` files; in a `save_to_disk` folder, in the order its state.json lists them."""
    state = root / "state.json"
    if state.is_file():
        try:
            names = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
            return [root / name for name in names]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{state}: not a Hugging Face dataset state (no _data_files list)") from None
    return [p for p in visible_files(root) if p.suffix == ".arrow"]


def read_arrow(path: Path, schema_only: bool = False) -> tuple[Any, Any]:
    """(table over the mapped file, mapping): the IPC stream format, or the file format;
    `schema_only`: (its schema, mapping), read from its first message or footer alone."""
    import pyarrow as pa

    if not path.is_file():
        raise DataError(f"{path}: not found")
    mapped = map_file(path)
    for open_ipc in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            reader = open_ipc(pa.BufferReader(pa.py_buffer(mapped)))
            return reader.schema if schema_only else reader.read_all(), mapped
        except (pa.ArrowException, OSError):
            continue
    raise DataError(f"{path}: not a readable Arrow IPC file")


def arrow_column_type(path: Path, column: str) -> Any:
    schema, _ = read_arrow(path, schema_only=True)
    return _check_column(path, schema, column)


def open_arrow_tokens(path: Path, column: str) -> TokenFile:
    """The column's tokens where they lie in the mapped file (record batches are runs of them)."""
    identity = file_identity(path, f"arrow-{column}")
    layout = remembered_layout(identity, lambda: _arrow_layout(path, column))
    mapped = map_file(path)
    dtype, starts, counts = np.dtype(str(layout["dtype"])), layout["starts"], layout["counts"]
    if len(starts) == 1:
        tokens = view(mapped, dtype, int(starts[0]), int(counts[0]))
    else:
        tokens = Runs(mapped, dtype, starts, counts)
    return TokenFile(path, tokens, layout["docs"], (mapped,), identity)


def _arrow_layout(path: Path, column: str) -> dict[str, np.ndarray]:
    """Where each record batch's tokens lie in the file, their dtype, and document starts."""
    table, mapped = read_arrow(path)
    kind = _check_column(path, table.schema, column)
    if not is_token_type(kind):
        raise DataError(f"{path}: column {column!r} holds {kind}, not token ids (a list of integers)")
    parts, doc_ends, first = [], [], 0
    for chunk in table.column(column).chunks:
        offsets = _offsets(chunk)
        values = chunk.values[int(offsets[0]) : int(offsets[-1])]
        if len(values) == 0:
            continue
        if values.null_count:
            raise DataError(f"{path}: column {column!r} has null token ids")
        parts.append(values.to_numpy(zero_copy_only=True))
        doc_ends.append(offsets[1:] - offsets[0] + first)
        first += len(values)
    if not parts:
        raise DataError(f"{path}: column {column!r} is empty")
    base = np.frombuffer(mapped, dtype=np.uint8).ctypes.data
    starts = np.array([p.ctypes.data - base for p in parts], dtype=np.int64)
    if (starts < 0).any() or (starts >= len(mapped)).any():
        raise DataError(f"{path}: compressed Arrow buffers cannot be mapped; save it uncompressed")
    return {
        "dtype": np.array(parts[0].dtype.newbyteorder("<").str),
        "starts": starts,
        "counts": np.array([len(p) for p in parts], dtype=np.int64),
        "docs": _distinct(np.concatenate([[0], *doc_ends])),
    }


def _distinct(starts: np.ndarray) -> np.ndarray:
    """Document starts from row offsets: an empty row starts where the next one does."""
    return starts[np.concatenate([[True], np.diff(starts) > 0])]


def _offsets(chunk: Any) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(chunk.type):
        size = chunk.type.list_size
        return (np.arange(len(chunk) + 1, dtype=np.int64) + chunk.offset) * size
    return chunk.offsets.to_numpy().astype(np.int64)


def arrow_text_rows(path: Path, column: str) -> list[bytes]:
    table, _ = read_arrow(path)
    return [v.encode() if isinstance(v, str) else v for v in table.column(column).to_pylist() if v is not None]


# --- Parquet ---------------------------------------------------------------------------


def open_parquet(path: Path, column: str) -> Any:
    """A ParquetFile that has `column` (DataError otherwise)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    _check_column(path, parquet.schema_arrow, column)
    return parquet


def open_parquet_tokens(path: Path, column: str) -> TokenFile:
    """The column's tokens, converted once into the cache and mapped from there."""
    identity = file_identity(path, f"parquet-{column}-v{_CONVERTED_FORMAT}")
    stem = cache_dir() / "parquet-tokens" / hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    tokens_path, docs_path = stem.with_suffix(".tokens"), stem.with_suffix(".docs.npy")
    parquet = open_parquet(path, column)
    kind = parquet.schema_arrow.field(column).type
    if not is_token_type(kind):
        raise DataError(f"{path}: column {column!r} holds {kind}, not token ids (a list of integers)")
    dtype = np.dtype(kind.value_type.to_pandas_dtype()).newbyteorder("<")
    if not docs_path.is_file():
        remember_range(identity, _convert(path, parquet, column, dtype, tokens_path, docs_path))
    docs = np.load(docs_path)
    mapped = map_file(tokens_path)
    tokens = np.frombuffer(mapped, dtype=dtype, count=int(docs[-1]))
    return TokenFile(path, tokens, docs, (mapped,), identity)


def _row_groups(path: Path, column: str, groups: int) -> Iterator[Any]:
    """The column of each row group in order, decoded on up to DECODE_THREADS threads (pyarrow
    decodes without the GIL; each thread reads through its own ParquetFile), at most one row
    group per thread decoded ahead of the one being written."""
    import pyarrow.parquet as pq

    local = threading.local()

    def decode(group: int) -> Any:
        if not hasattr(local, "file"):
            local.file = pq.ParquetFile(path)
        return local.file.read_row_group(group, columns=[column], use_threads=False).column(0)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, min(DECODE_THREADS, cpus, groups))
    with ThreadPoolExecutor(threads) as pool:
        pending: collections.deque[Future] = collections.deque()
        for group in range(groups):
            pending.append(pool.submit(decode, group))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _convert(
    path: Path, parquet: Any, column: str, dtype: np.dtype, tokens_path: Path, docs_path: Path
) -> tuple[int, int]:
    """Write the column's tokens and document starts, row group by row group (memory holds one
    row group's decoding at a time); return the token range, found on the way."""
    import pyarrow as pa

    ends, total, ranges = [np.zeros(1, dtype=np.int64)], 0, []
    meta = parquet.metadata
    size = sum(meta.row_group(g).column(0).num_values for g in range(meta.num_row_groups)) * dtype.itemsize
    try:
        with (
            preparing(f"converting the {column} column of {path.name}", size) as advance,
            atomic_write(tokens_path, make_parents=True) as f,
        ):
            for decoded in _row_groups(path, column, parquet.num_row_groups):
                for chunk in decoded.chunks:
                    offsets = _offsets(chunk)
                    values = chunk.values[int(offsets[0]) : int(offsets[-1])]
                    if values.null_count:
                        raise DataError(f"{path}: column {column!r} has null token ids")
                    tokens = values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
                    if len(tokens):
                        ranges.append(bounds([tokens]))
                    f.write(tokens)
                    advance(tokens.nbytes)
                    ends.append(offsets[1:] - offsets[0] + total)
                    total += len(values)
            if total == 0:
                raise DataError(f"{path}: column {column!r} is empty")
        with atomic_write(docs_path) as f:
            np.save(f, _distinct(np.concatenate(ends)))
    except TelescopeError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot cache its token column ({e})") from None
    finally:
        pa.default_memory_pool().release_unused()
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)
