"""Token files: memory-mapped, never copied, scanned once for their token range.

Every token reader returns `TokenFile`s: a 1-D token sequence over a read-only mapping
of the file, and, where the format marks them, its document boundaries. The smallest and
largest token of a file are found by one chunked pass and cached on disk keyed by the
file's path, size and modification time. Pages a scan, an open or a batch touched are
handed back to the kernel (`release`), so resident memory does not grow with the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

_SCAN_BYTES = 1 << 24
_STATS_FORMAT = 1


def map_file(path: Path) -> mmap.mmap:
    """The whole file, mapped read-only (DataError if empty)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def view(buffer: mmap.mmap, dtype: np.dtype | str, offset: int, count: int) -> np.ndarray:
    """`count` tokens of `dtype` (little-endian unless it says) at byte `offset` of a mapping, without copying."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == "=":
        dtype = dtype.newbyteorder("<")
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)


class Runs:
    """Runs of tokens scattered through one mapped file (Arrow record batches, MDS samples),
    indexed like one 1-D array without joining them: slicing gives a view, indexing with an
    integer array gathers those tokens (as int64)."""

    def __init__(self, buffer: mmap.mmap, dtype: np.dtype, byte_starts: np.ndarray, counts: np.ndarray) -> None:
        self.buffer, self.dtype = buffer, np.dtype(dtype)
        self._bytes = np.frombuffer(buffer, dtype=np.uint8)
        self._byte_starts = byte_starts.astype(np.int64)
        self._counts = counts.astype(np.int64)
        self._ends = np.cumsum(self._counts)
        self._start, self._stop = 0, int(self._ends[-1]) if len(self._ends) else 0

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step != 1:
                raise ValueError("Runs slices take no step")
            sliced = copy.copy(self)
            sliced._start, sliced._stop = self._start + a, self._start + max(a, b)
            return sliced
        position = np.asarray(key, dtype=np.int64) + self._start
        run = np.searchsorted(self._ends, position, side="right")
        address = self._byte_starts[run] + (position - (self._ends[run] - self._counts[run])) * self.dtype.itemsize
        raw = self._bytes[address[..., None] + np.arange(self.dtype.itemsize)]
        return raw.view(self.dtype)[..., 0].astype(np.int64)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def chunks(self) -> Iterator[np.ndarray]:
        """The runs covering this view, clipped to it, as arrays over the mapping."""
        first = int(np.searchsorted(self._ends, self._start, side="right"))
        for r in range(first, len(self._counts)):
            begin = int(self._ends[r] - self._counts[r])
            if begin >= self._stop:
                break
            lo, hi = max(0, self._start - begin), min(int(self._counts[r]), self._stop - begin)
            offset = int(self._byte_starts[r]) + lo * self.dtype.itemsize
            yield np.frombuffer(self.buffer, dtype=self.dtype, count=hi - lo, offset=offset)


@dataclass(frozen=True, eq=False)
class TokenFile:
    """One file's tokens and, where the format marks them, its document boundaries."""

    path: Path
    tokens: Any  # 1-D: a numpy array over a mapping, or Runs
    docs: np.ndarray | None  # int64 document starts followed by len(tokens); None when unmarked
    maps: tuple[mmap.mmap, ...]  # the mappings `tokens` lies in, whose pages a scan hands back
    identity: str  # what the cached token range is keyed by: path, size, mtime, layout

    def token_range(self) -> tuple[int, int]:
        """(smallest, largest) token (smallest 0 for unsigned dtypes), from the on-disk cache or one chunked pass."""
        cache = _stats_path(self.identity)
        try:
            stats = json.loads(cache.read_text())
            return int(stats["min"]), int(stats["max"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        lo, hi = _scan(self.tokens, self.maps)
        try:
            with atomic_write(cache, make_parents=True) as f:
                f.write(json.dumps({"min": lo, "max": hi}).encode())
        except TelescopeError:
            pass  # a read-only cache only costs the next process a rescan
        return lo, hi


def file_identity(path: Path, layout: str) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{layout}|v{_STATS_FORMAT}"


def _stats_path(identity: str) -> Path:
    from telescope.data.text import cache_dir

    return cache_dir() / "token-ranges" / f"{hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()}.json"


def release(maps: tuple[mmap.mmap, ...]) -> None:
    """Hand a mapping's resident pages back to the kernel: the page cache keeps them, so the
    next touch costs a minor fault, while this process's resident memory stays small whatever
    the file size (a fault may map a whole large folio, up to megabytes, around one window)."""
    if hasattr(mmap, "MADV_DONTNEED"):
        for m in maps:
            m.madvise(mmap.MADV_DONTNEED)


def _scan(tokens: Any, maps: tuple[mmap.mmap, ...]) -> tuple[int, int]:
    arrays = tokens.chunks() if isinstance(tokens, Runs) else [tokens]
    lo, hi, unreleased = None, None, 0
    for array in arrays:
        step = max(1, _SCAN_BYTES // array.itemsize)
        unsigned = array.dtype.kind == "u"  # no need for a second pass looking for negative tokens
        for i in range(0, len(array), step):
            chunk = array[i : i + step]
            low = 0 if unsigned else int(chunk.min())
            lo = low if lo is None else min(lo, low)
            hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
            unreleased += chunk.nbytes
            if unreleased >= _SCAN_BYTES:
                release(maps)
                unreleased = 0
    release(maps)
    assert lo is not None and hi is not None, "readers refuse files without tokens"
    return lo, hi
