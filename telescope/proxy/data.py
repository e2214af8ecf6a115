"""Training data for the proxy trials (DESIGN §4): token streams, batches, held-out set.

`load_data(source)` turns a data source into a `TokenData`: a train and a
validation token stream, each a list of 1-D numpy arrays (memory-mapped where
the source is a token file). Sources:

- ``"stdlib"`` (default): the ``.py`` files of the running interpreter's
  standard library, byte-level (vocab 256). Cached on disk after the first load.
- nanoGPT shards (raw uint16 ``.bin``) and modded-nanogpt shards (a 256 x int32
  header with magic 20240520, version 1 and the token count, then uint16
  tokens): one file, or a folder of them. Vocab 50257 (GPT-2) unless a token
  is larger.
- a text file, or a folder of text files (recursively; binary-looking and
  hidden files skipped), byte-level.
- a Parquet file or a folder of them, ``PATH[:COLUMN]`` (column ``text`` by
  default), byte-level, one document per row.

Validation split: a folder of shards or Parquet files with ``val``-named files
uses them; byte-level documents (files, rows) go to validation when a hash of
their name falls below `VAL_DOC_FRACTION`; a single shard or file, or a hash
split that leaves one side empty, splits off its last `VAL_TAIL_FRACTION`.
Byte-level documents are joined with a NUL byte, the end-of-document token.

Batches are windows of seq_len + 1 tokens that never cross a file boundary.
Training windows are drawn uniformly from a generator seeded by (seed, step),
so every trial with the same seed sees the same batches in the same order.
Validation windows are evenly spaced over the held-out stream, the same for
every trial.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

GPT2_VOCAB = 50257
BYTE_VOCAB = 256
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
DOC_SEPARATOR = b"\x00"
VAL_DOC_FRACTION = 0.02  # share of documents (files, rows) held out, chosen by name hash
VAL_TAIL_FRACTION = 0.1  # share of a single file held out from its end
DEFAULT_PARQUET_COLUMN = "text"

_CACHE_FORMAT = 1  # bump when the stdlib corpus or its split changes
_BINARY_SNIFF_BYTES = 8000  # git's heuristic: a NUL byte in the first 8000 bytes
_VAL_NAME_PARTS = {"val", "valid", "validation"}
_MODDED_SHARD_NAME = re.compile(r".+_(train|val)_\d+\.bin$")
_MAX_CHUNK = 1 << 24


@dataclass(frozen=True, eq=False)
class TokenData:
    """A train and a validation token stream, each a list of 1-D token arrays."""

    name: str
    vocab_size: int
    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]

    @property
    def train_tokens(self) -> int:
        return sum(len(s) for s in self.train)

    @property
    def val_tokens(self) -> int:
        return sum(len(s) for s in self.val)

    def check_seq_len(self, seq_len: int) -> None:
        """Raise DataError unless both splits hold at least one window of seq_len + 1 tokens."""
        for split, segments in (("train", self.train), ("validation", self.val)):
            if _window_counts(segments, seq_len + 1).sum() == 0:
                tokens = sum(len(s) for s in segments)
                raise DataError(
                    f"{self.name}: {split} split has {tokens} tokens in files too short for one "
                    f"sequence of seq_len+1 = {seq_len + 1} tokens"
                )

    def train_batch(
        self, step: int, batch_size: int, seq_len: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, int64 (batch_size, seq_len); a pure function of (seed, step)."""
        self.check_seq_len(seq_len)
        counts = _window_counts(self.train, seq_len + 1)
        rng = np.random.default_rng([seed % 2**64, step % 2**64])
        ids = rng.integers(0, counts.sum(), size=batch_size)
        return _as_pair(_gather(self.train, counts, ids, seq_len + 1))

    def val_batches(
        self, n: int, batch_size: int, seq_len: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`n` fixed held-out batches: windows evenly spaced over the validation stream."""
        self.check_seq_len(seq_len)
        counts = _window_counts(self.val, seq_len + 1)
        k = n * batch_size
        ids = np.arange(k, dtype=np.int64) * int(counts.sum()) // max(k, 1)
        windows = _gather(self.val, counts, ids, seq_len + 1)
        return [_as_pair(windows[i * batch_size : (i + 1) * batch_size]) for i in range(n)]

    def __repr__(self) -> str:
        return (
            f"TokenData({self.name!r}, vocab_size={self.vocab_size}, "
            f"train_tokens={self.train_tokens}, val_tokens={self.val_tokens})"
        )


def load_data(source: str | os.PathLike = "stdlib") -> TokenData:
    """Load a data source (see the module docstring); cached per process by resolved source."""
    return _load_resolved(*_resolve(str(source)))


# --- batches ---------------------------------------------------------------------------


def _window_counts(segments: tuple[np.ndarray, ...], length: int) -> np.ndarray:
    return np.array([max(0, len(s) - length + 1) for s in segments], dtype=np.int64)


def _gather(
    segments: tuple[np.ndarray, ...], counts: np.ndarray, ids: np.ndarray, length: int
) -> np.ndarray:
    """Windows `ids` of the concatenated window index space, as an int64 (len(ids), length) array."""
    ends = np.cumsum(counts)
    starts = ends - counts
    segment_of = np.searchsorted(ends, ids, side="right")
    offsets = np.arange(length)
    out = np.empty((len(ids), length), dtype=np.int64)
    for s in np.unique(segment_of):
        rows = np.flatnonzero(segment_of == s)
        out[rows] = segments[s][(ids[rows] - starts[s])[:, None] + offsets]
    return out


def _as_pair(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(windows[:, :-1])),
        torch.from_numpy(np.ascontiguousarray(windows[:, 1:])),
    )


# --- resolving a source ----------------------------------------------------------------


def source_path(source: str) -> Path:
    """The file or folder a data source reads (`PATH[:COLUMN]` without its column)."""
    if source == "stdlib":
        return Path(sysconfig.get_paths()["stdlib"])
    path = Path(source).expanduser()
    if not path.exists() and ":" in source:
        return Path(source.rpartition(":")[0]).expanduser()
    return path


def _resolve(source: str) -> tuple[str, str, str | None]:
    """(kind, absolute path, parquet column) for a source string."""
    if source == "stdlib":
        return "stdlib", str(source_path(source).resolve()), None
    path, column = source_path(source), None
    if str(path) != str(Path(source).expanduser()):
        column = source.rpartition(":")[2]
        if not column:
            raise DataError(f"{source}: empty column name after ':'")
    if not path.exists():
        raise DataError(f"{path}: data path not found")
    path = path.resolve()
    if column is not None:
        return "parquet", str(path), column
    if path.is_file():
        if path.suffix == ".bin":
            return "shards", str(path), None
        if path.suffix == ".parquet":
            return "parquet", str(path), DEFAULT_PARQUET_COLUMN
        return "text", str(path), None
    if not path.is_dir():
        raise DataError(f"{path}: not a regular file or folder")
    if any(p.is_file() for p in path.glob("*.bin")):
        return "shards", str(path), None
    if any(_parquet_files(path)):
        return "parquet", str(path), DEFAULT_PARQUET_COLUMN
    return "text", str(path), None


@functools.cache
def _load_resolved(kind: str, path: str, column: str | None) -> TokenData:
    if kind == "stdlib":
        return _load_stdlib(Path(path))
    if kind == "shards":
        return _load_shards(Path(path))
    if kind == "parquet":
        return _load_parquet(Path(path), column or DEFAULT_PARQUET_COLUMN)
    return _load_text(Path(path))


# --- byte-level documents and their split ----------------------------------------------


def _is_val_document(key: str) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < VAL_DOC_FRACTION * 2**64


def _split_documents(name: str, docs: Iterable[tuple[str, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """Byte streams (train, val): documents whose key hashes into validation go there."""
    train: list[bytes] = []
    val: list[bytes] = []
    for key, content in docs:
        if content:
            (val if _is_val_document(key) else train).append(content)
    if not train and not val:
        raise DataError(f"{name}: no non-empty documents")
    if not train or not val:
        return _tail_split(_joined(train + val))
    return _joined(train), _joined(val)


def _joined(docs: Iterable[bytes]) -> np.ndarray:
    return np.frombuffer(DOC_SEPARATOR.join(d for d in docs if d), dtype=np.uint8)


def _tail_split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_val = max(1, int(len(tokens) * VAL_TAIL_FRACTION))
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def _byte_data(name: str, train: np.ndarray, val: np.ndarray) -> TokenData:
    return TokenData(name=name, vocab_size=BYTE_VOCAB, train=(train,), val=(val,))


# --- the default corpus: the standard library's Python sources -------------------------


def cache_dir() -> Path:
    """Where derived data is cached: $TELESCOPE_CACHE, else $XDG_CACHE_HOME/telescope or ~/.cache/telescope."""
    if os.environ.get("TELESCOPE_CACHE"):
        return Path(os.environ["TELESCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "telescope"


def _stdlib_documents(root: Path) -> Iterator[tuple[str, bytes]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    for path in sorted(files):
        yield path.relative_to(root).as_posix(), path.read_bytes()


def _load_stdlib(root: Path) -> TokenData:
    version = platform.python_version()
    name = f"stdlib (Python {version}, {root})"
    key = f"stdlib-py{version}-{hashlib.blake2b(str(root).encode(), digest_size=4).hexdigest()}-v{_CACHE_FORMAT}"
    paths = {split: cache_dir() / f"{key}-{split}.u8" for split in ("train", "val")}
    if all(p.is_file() and p.stat().st_size > 0 for p in paths.values()):
        return _byte_data(name, *(np.memmap(paths[s], dtype=np.uint8, mode="r") for s in ("train", "val")))
    if not root.is_dir():
        raise DataError(f"{root}: standard library folder not found")
    train, val = _split_documents(f"{root} (*.py)", _stdlib_documents(root))
    try:
        for split, tokens in (("val", val), ("train", train)):
            with atomic_write(paths[split], make_parents=True) as f:
                f.write(tokens.tobytes())
    except TelescopeError:
        pass  # a read-only cache only costs the next process a reload
    return _byte_data(name, train, val)


# --- text files and folders ------------------------------------------------------------


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\x00" in f.read(_BINARY_SNIFF_BYTES)


def _visible_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(p for p in files if p.is_file())


def _load_text(path: Path) -> TokenData:
    if path.is_file():
        content = path.read_bytes()
        if not content:
            raise DataError(f"{path}: file is empty")
        if DOC_SEPARATOR in content[:_BINARY_SNIFF_BYTES]:
            raise DataError(f"{path}: looks binary (NUL bytes), not a text file")
        return _byte_data(str(path), *_tail_split(np.frombuffer(content, dtype=np.uint8)))
    files = [p for p in _visible_files(path) if p.stat().st_size > 0 and not _looks_binary(p)]
    if not files:
        raise DataError(f"{path}: folder has no non-empty text files")
    docs = ((p.relative_to(path).as_posix(), p.read_bytes()) for p in files)
    return _byte_data(str(path), *_split_documents(str(path), docs))


# --- Parquet ---------------------------------------------------------------------------


def _parquet_files(root: Path) -> list[Path]:
    return [p for p in _visible_files(root) if p.suffix == ".parquet"]


def _is_val_name(path: Path) -> bool:
    return any(part in _VAL_NAME_PARTS for part in re.split(r"[^a-z0-9]+", path.stem.lower()))


def _parquet_rows(path: Path, key: str, column: str) -> Iterator[tuple[str, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(schema.names) or 'none'})")
    kind = schema.field(column).type
    text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(is_text(kind) for is_text in text_types):
        raise DataError(f"{path}: column {column!r} holds {kind}, not text")
    values = parquet.read(columns=[column]).column(column).to_pylist()
    for i, value in enumerate(values):
        if value is not None:
            yield f"{key}#{i}", value.encode() if isinstance(value, str) else value


def _load_parquet(path: Path, column: str) -> TokenData:
    if path.is_file():
        files, rel = [path], {path: path.name}
    else:
        files = _parquet_files(path)
        if not files:
            raise DataError(f"{path}: folder has no .parquet files")
        rel = {p: p.relative_to(path).as_posix() for p in files}
    name = f"{path}:{column}"
    val_files = [p for p in files if _is_val_name(p)]
    train_files = [p for p in files if not _is_val_name(p)]
    if val_files and train_files:
        train, val = (
            _joined(doc for p in group for _, doc in _parquet_rows(p, rel[p], column))
            for group in (train_files, val_files)
        )
        for split, tokens, group in (("train", train, train_files), ("validation", val, val_files)):
            if len(tokens) == 0:
                raise DataError(f"{name}: {split} files {', '.join(rel[p] for p in group)} hold no text")
        return _byte_data(name, train, val)
    docs = (row for p in files for row in _parquet_rows(p, rel[p], column))
    return _byte_data(name, *_split_documents(name, docs))


# --- nanoGPT and modded-nanogpt token shards -------------------------------------------


def _open_shard(path: Path) -> np.ndarray:
    """Memory-map one shard's uint16 tokens, checking its header or byte count."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty")
    header_bytes = SHARD_HEADER_INTS * 4
    header = np.fromfile(path, dtype="<i4", count=min(SHARD_HEADER_INTS, size // 4))
    has_magic = len(header) > 0 and header[0] == SHARD_MAGIC
    if _MODDED_SHARD_NAME.match(path.name) and not has_magic:
        found = int(header[0]) if len(header) else None
        raise DataError(f"{path}: bad magic {found} in modded-nanogpt shard header (expected {SHARD_MAGIC})")
    if not has_magic:
        if size % 2:
            raise DataError(f"{path}: odd byte count ({size}), not a uint16 token file")
        return np.memmap(path, dtype="<u2", mode="r")
    if size < header_bytes:
        raise DataError(f"{path}: truncated shard header ({size} bytes, expected {header_bytes})")
    if header[1] != SHARD_VERSION:
        raise DataError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    declared, present = int(header[2]), (size - header_bytes) // 2
    if declared < 0 or present < declared:
        raise DataError(f"{path}: truncated shard: header says {declared} tokens, file has {present}")
    if declared == 0:
        raise DataError(f"{path}: shard holds no tokens")
    return np.memmap(path, dtype="<u2", mode="r", offset=header_bytes, shape=(declared,))


def _max_token(segments: Iterable[np.ndarray]) -> int:
    """Largest token, read in chunks so a memory-mapped shard is never loaded whole."""
    top = 0
    for s in segments:
        for i in range(0, len(s), _MAX_CHUNK):
            top = max(top, int(s[i : i + _MAX_CHUNK].max()))
    return top


def _load_shards(path: Path) -> TokenData:
    if path.is_file():
        train_files, val_files = [path], []  # one shard, whatever its name: split off its tail
    else:
        files = sorted(p for p in path.glob("*.bin") if p.is_file())
        val_files = [p for p in files if _is_val_name(p)]
        train_files = [p for p in files if not _is_val_name(p)]
    if not train_files:
        raise DataError(f"{path}: no training shards (only {', '.join(p.name for p in val_files)})")
    train = [_open_shard(p) for p in train_files]
    if val_files:
        val = [_open_shard(p) for p in val_files]
    else:
        last_train, last_val = _tail_split(train[-1])
        train[-1:] = [last_train] if len(last_train) else []
        val = [last_val]
    vocab = max(GPT2_VOCAB, _max_token(train + val) + 1)
    return TokenData(name=str(path), vocab_size=vocab, train=tuple(train), val=tuple(val))
