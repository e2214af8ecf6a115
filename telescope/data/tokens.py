"""Token files: memory-mapped, never copied, scanned once for their token range.

Every token reader returns `TokenFile`s: a 1-D token sequence over a read-only mapping
of the file, and, where the format marks them, its document boundaries. The largest token
of a file (and its smallest, where that is negative) is found by one pass over its tokens,
bound by memory bandwidth (a 4 GB file in the page cache: well under a second), and cached
on disk keyed by the file's path, size and modification time; so is the layout of formats
whose tokens lie between headers (Arrow record batches, MDS samples). Pages a scan, an open or a
batch touched are handed back to the kernel (`release`), so resident memory does not grow
with the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import mmap
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from telescope.data.preparing import preparing
from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

_SCAN_BYTES = 1 << 24  # bytes of a mapped token array scanned before its pages are handed back
_READ_BYTES = 1 << 22  # bytes of scattered runs read into one buffer
_GAP_BYTES = 1 << 16  # bytes between runs (sample headers) read through rather than seeked over
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

    def extents(self) -> tuple[np.ndarray, np.ndarray]:
        """(byte offset, byte count) in the mapped file of each run in this view, clipped to it."""
        begins = self._ends - self._counts
        first = int(np.searchsorted(self._ends, self._start, side="right"))
        last = int(np.searchsorted(begins, self._stop, side="left"))
        lo = np.maximum(self._start - begins[first:last], 0)
        hi = np.minimum(self._counts[first:last], self._stop - begins[first:last])
        return self._byte_starts[first:last] + lo * self.dtype.itemsize, (hi - lo) * self.dtype.itemsize


@dataclass(frozen=True, eq=False)
class TokenFile:
    """One file's tokens and, where the format marks them, its document boundaries."""

    path: Path
    tokens: Any  # 1-D: a numpy array over a mapping, or Runs over the mapping of `path` (a scan reads it)
    docs: np.ndarray | None  # int64 document starts followed by len(tokens); None when unmarked
    maps: tuple[mmap.mmap, ...]  # the mappings `tokens` lies in, whose pages a scan hands back
    identity: str  # what the cached token range is keyed by: path, size, mtime, layout

    def token_range(self) -> tuple[int, int]:
        """(smallest token if negative else 0, largest token), from the on-disk cache or one pass."""
        try:
            stats = json.loads(_stats_path(self.identity).read_text())
            return int(stats["min"]), int(stats["max"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        blocks = _read_runs(self.tokens, self.path) if isinstance(self.tokens, Runs) else _array_blocks(self)
        size = len(self.tokens) * np.dtype(self.tokens.dtype).itemsize
        with preparing(f"finding the largest token of {self.path.name}", size) as advance:
            return remember_range(self.identity, bounds(_counted(blocks, advance)))


def remember_range(identity: str, token_range: tuple[int, int]) -> tuple[int, int]:
    """Cache a file's token range (a reader that decodes every token anyway finds it for free)."""
    try:
        with atomic_write(_stats_path(identity), make_parents=True) as f:
            f.write(json.dumps({"min": token_range[0], "max": token_range[1]}).encode())
    except TelescopeError:
        pass  # a read-only cache only costs the next process a rescan
    return token_range


def remembered_layout(identity: str, read: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A file's layout (the arrays an open reads from headers spread through it: where its
    runs of tokens lie, where its documents start), from the on-disk cache or `read()`, then
    cached: from disk, reading every record batch's or sample's header of a 4 GB file takes
    seconds, the cached arrays milliseconds."""
    path = _cache_path(identity, ".npz")
    try:
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # none yet, or unreadable: read the file again
        pass
    layout = read()
    try:
        with atomic_write(path, make_parents=True) as f:
            np.savez(f, **layout)
    except TelescopeError:
        pass  # a read-only cache only costs the next process a reread
    return layout


def file_identity(path: Path, layout: str) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{layout}|v{_STATS_FORMAT}"


def _stats_path(identity: str) -> Path:
    return _cache_path(identity, ".json")


def _cache_path(identity: str, suffix: str) -> Path:
    from telescope.data.text import cache_dir

    return cache_dir() / "token-ranges" / f"{hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()}{suffix}"


def release(maps: tuple[mmap.mmap, ...]) -> None:
    """Hand a mapping's resident pages back to the kernel: the page cache keeps them, so the
    next touch costs a minor fault, while this process's resident memory stays small whatever
    the file size (a fault may map a whole large folio, up to megabytes, around one window)."""
    if hasattr(mmap, "MADV_DONTNEED"):
        for m in maps:
            m.madvise(mmap.MADV_DONTNEED)


def bounds(blocks: Iterable[np.ndarray]) -> tuple[int, int]:
    """(smallest token if negative else 0, largest token) of integer arrays, in one pass: read
    as unsigned, a negative token is above every non-negative one, so one max finds both the
    largest token and whether any is negative (then that block's min and max are taken)."""
    lo, hi = 0, None
    for block in blocks:
        if not len(block):
            continue
        top = int(block.view(block.dtype.str.replace("i", "u")).max())
        if block.dtype.kind == "i" and top >= 1 << (8 * block.dtype.itemsize - 1):
            lo, top = min(lo, int(block.min())), int(block.max())
        hi = top if hi is None else max(hi, top)
    assert hi is not None, "readers refuse files without tokens"
    return lo, hi


def _counted(blocks: Iterable[np.ndarray], advance: Callable[[int], None]) -> Iterator[np.ndarray]:
    for block in blocks:
        yield block
        advance(block.nbytes)


def _array_blocks(file: TokenFile) -> Iterator[np.ndarray]:
    """A token array over a mapping, a chunk at a time, handing each chunk's pages back."""
    step = max(1, _SCAN_BYTES // file.tokens.itemsize)
    for i in range(0, len(file.tokens), step):
        yield file.tokens[i : i + step]
        release(file.maps)


def _read_runs(runs: Runs, path: Path) -> Iterator[np.ndarray]:
    """The tokens of scattered runs, in order, read into one reused buffer: each `preadv`
    reads a stretch of the file, the runs' bytes into the buffer and the short gaps between
    them (sample headers) into scratch, so no run costs a numpy call and no page is mapped."""
    starts, counts = runs.extents()
    pieces = -(-counts // _READ_BYTES)  # runs longer than the buffer are read in pieces
    piece = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # its index in its run
    offset = np.repeat(starts, pieces) + piece * _READ_BYTES
    size = np.minimum(np.repeat(starts + counts, pieces) - offset, _READ_BYTES)
    buffer = np.empty(_READ_BYTES, dtype=np.uint8)
    out, scratch = memoryview(buffer), memoryview(bytearray(_GAP_BYTES))
    most = min(os.sysconf("SC_IOV_MAX"), 1024) - 1
    offsets, sizes, i = offset.tolist(), size.tolist(), 0
    with path.open("rb", buffering=0) as f:
        while i < len(offsets):
            first = end = offsets[i]
            vectors: list[memoryview] = []
            used = 0
            while i < len(offsets) and used + sizes[i] <= _READ_BYTES and len(vectors) < most:
                gap = offsets[i] - end
                if not 0 <= gap <= _GAP_BYTES:
                    break
                if gap:
                    vectors.append(scratch[:gap])
                vectors.append(out[used : used + sizes[i]])
                used, end, i = used + sizes[i], offsets[i] + sizes[i], i + 1
            if os.preadv(f.fileno(), vectors, first) != end - first:
                raise DataError(f"{path}: shorter than its layout says (changed while being read?)")
            yield buffer[:used].view(runs.dtype)
