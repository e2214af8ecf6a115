"""Text sources: the default corpus (the standard library), text files and folders, and
Parquet text columns, as documents; read byte-level (vocab 256) unless a tokenizer is set
(telescope.data.tokenized).

Byte-level documents are joined with a NUL byte, the end-of-document token. Metadata files
of token datasets (dataset_info.json, state.json, index.json, ...) are never text.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from telescope.data.corpus import Stream, TokenData
from telescope.data.split import is_val_document, is_val_name, tail_length
from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

BYTE_VOCAB = 256
DOC_SEPARATOR = b"\x00"
DEFAULT_PARQUET_COLUMN = "text"

_CACHE_FORMAT = 1  # bump when the stdlib corpus or its split changes
_BINARY_SNIFF_BYTES = 8000  # git's heuristic: a NUL byte in the first 8000 bytes
METADATA_NAMES = {"dataset_info.json", "state.json", "dataset_dict.json", "index.json"}
TOKEN_SUFFIXES = {".bin", ".idx", ".npy", ".arrow", ".parquet", ".mds"}


@dataclass(frozen=True)
class TextSplit:
    """Documents of a text source on each side of the split; `tail` when none was held out by
    name or hash, so the last VAL_TAIL_FRACTION of the joined stream is."""

    name: str
    train: list[bytes]
    val: list[bytes]
    tail: bool


def cache_dir() -> Path:
    """Where derived data is cached: $TELESCOPE_CACHE, else $XDG_CACHE_HOME/telescope or ~/.cache/telescope."""
    if os.environ.get("TELESCOPE_CACHE"):
        return Path(os.environ["TELESCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "telescope"


def byte_level(split: TextSplit) -> TokenData:
    """Bytes as tokens, vocab 256."""
    if split.tail:
        joined = _joined(split.train)
        train, val = joined[: len(joined) - tail_length(len(joined))], joined[len(joined) - tail_length(len(joined)) :]
    else:
        train, val = _joined(split.train), _joined(split.val)
    return _byte_data(split.name, train, val)


def _joined(docs: Iterable[bytes]) -> np.ndarray:
    return np.frombuffer(DOC_SEPARATOR.join(d for d in docs if d), dtype=np.uint8)


def _byte_data(name: str, train: np.ndarray, val: np.ndarray) -> TokenData:
    return TokenData(name, BYTE_VOCAB, "byte-level text", Stream.of_files([train]), Stream.of_files([val]))


def split_documents(name: str, docs: Iterable[tuple[str, bytes]]) -> TextSplit:
    """Documents whose key hashes into validation go there; a tail split if a side is empty."""
    train: list[bytes] = []
    val: list[bytes] = []
    for key, content in docs:
        if content:
            (val if is_val_document(key) else train).append(content)
    if not train and not val:
        raise DataError(f"{name}: no non-empty documents")
    if not train or not val:
        return TextSplit(name, train + val, [], tail=True)
    return TextSplit(name, train, val, tail=False)


# --- the default corpus: the standard library's Python sources -------------------------


def _stdlib_documents(root: Path) -> Iterator[tuple[str, bytes]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    for path in sorted(files):
        yield path.relative_to(root).as_posix(), path.read_bytes()


def stdlib_documents(root: Path) -> TextSplit:
    if not root.is_dir():
        raise DataError(f"{root}: standard library folder not found")
    return split_documents(f"{root} (*.py)", _stdlib_documents(root))


def load_stdlib(root: Path) -> TokenData:
    """Byte-level, cached on disk after the first load."""
    version = platform.python_version()
    name = f"stdlib (Python {version}, {root})"
    key = f"stdlib-py{version}-{hashlib.blake2b(str(root).encode(), digest_size=4).hexdigest()}-v{_CACHE_FORMAT}"
    paths = {split: cache_dir() / f"{key}-{split}.u8" for split in ("train", "val")}
    if all(p.is_file() and p.stat().st_size > 0 for p in paths.values()):
        return _byte_data(name, *(np.memmap(paths[s], dtype=np.uint8, mode="r") for s in ("train", "val")))
    data = byte_level(stdlib_documents(root))
    train, val = data.train_stream.files[0], data.val_stream.files[0]
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


def visible_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(p for p in files if p.is_file())


def _is_text_candidate(path: Path) -> bool:
    return path.name not in METADATA_NAMES and path.suffix not in TOKEN_SUFFIXES and path.stat().st_size > 0


def text_documents(path: Path) -> TextSplit:
    """One text file (its tail held out), or a folder's text files as documents."""
    if path.is_file():
        content = path.read_bytes()
        if not content:
            raise DataError(f"{path}: file is empty")
        if DOC_SEPARATOR in content[:_BINARY_SNIFF_BYTES]:
            raise DataError(f"{path}: looks binary (NUL bytes), not a text file")
        return TextSplit(str(path), [content], [], tail=True)
    files = [p for p in visible_files(path) if _is_text_candidate(p) and not _looks_binary(p)]
    if not files:
        raise DataError(
            f"{path}: folder has no non-empty text files and no token files "
            f"(.bin, .npy, PREFIX.idx + .bin, .arrow, .parquet, MDS index.json)"
        )
    docs = ((p.relative_to(path).as_posix(), p.read_bytes()) for p in files)
    return split_documents(str(path), docs)


# --- Parquet text ----------------------------------------------------------------------


def parquet_files(root: Path) -> list[Path]:
    return [p for p in visible_files(root) if p.suffix == ".parquet"]


def _parquet_rows(path: Path, key: str, column: str) -> Iterator[tuple[str, bytes]]:
    import pyarrow as pa

    from telescope.data.arrow import open_parquet

    parquet = open_parquet(path, column)
    kind = parquet.schema_arrow.field(column).type
    text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(is_text(kind) for is_text in text_types):
        raise DataError(f"{path}: column {column!r} holds {kind}, not text")
    values = parquet.read(columns=[column]).column(column).to_pylist()
    for i, value in enumerate(values):
        if value is not None:
            yield f"{key}#{i}", value.encode() if isinstance(value, str) else value


def parquet_documents(path: Path, column: str) -> TextSplit:
    """One document per row; val-named files held out, else a hash per row."""
    if path.is_file():
        files, rel = [path], {path: path.name}
    else:
        files = parquet_files(path)
        if not files:
            raise DataError(f"{path}: folder has no .parquet files")
        rel = {p: p.relative_to(path).as_posix() for p in files}
    name = f"{path}:{column}"
    val_files = [p for p in files if is_val_name(p)]
    train_files = [p for p in files if not is_val_name(p)]
    if val_files and train_files:
        split = TextSplit(
            name,
            *(
                [doc for p in group for _, doc in _parquet_rows(p, rel[p], column)]
                for group in (train_files, val_files)
            ),
            tail=False,
        )
        for side, docs, group in (("train", split.train, train_files), ("validation", split.val, val_files)):
            if not any(docs):
                raise DataError(f"{name}: {side} files {', '.join(rel[p] for p in group)} hold no text")
        return split
    return split_documents(name, (row for p in files for row in _parquet_rows(p, rel[p], column)))
