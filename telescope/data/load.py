"""`load_data`: a data source (README "Training data") to a `TokenData`.

The source names a format by its path: `stdlib`, a text file or folder, `FILE.bin` /
a folder of shards, `FILE.npy` / a folder of them, a Megatron `PREFIX` (or `PREFIX.bin`,
`PREFIX.idx`, a folder of them), `PATH.parquet[:COLUMN]`, `PATH.arrow[:COLUMN]` or a
`save_to_disk` folder, an MDS folder (`index.json`). Token data's vocabulary is its largest
token + 1, never assumed; a stated tokenizer's is its own.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from telescope.data.arrow import (
    arrow_column_type,
    arrow_files,
    arrow_text_rows,
    is_token_type,
    open_arrow_tokens,
    open_parquet,
    open_parquet_tokens,
)
from telescope.data.corpus import TokenData
from telescope.data.mds import is_mds, open_mds
from telescope.data.megatron import megatron_prefix, megatron_prefixes, open_megatron
from telescope.data.npy import npy_files, open_npy
from telescope.data.shards import RAW_DTYPES, open_shard, shard_files
from telescope.data.split import split_token_files
from telescope.data.text import (
    DEFAULT_PARQUET_COLUMN,
    TextSplit,
    byte_level,
    load_stdlib,
    parquet_documents,
    parquet_files,
    split_documents,
    stdlib_documents,
    text_documents,
)
from telescope.data.tokenized import tokenized
from telescope.data.tokens import TokenFile, release
from telescope.errors import DataError

if TYPE_CHECKING:
    from telescope.spec import TrainSettings

TOKEN_KINDS = ("shards", "npy", "megatron", "mds")


def load_data(
    source: str | os.PathLike = "stdlib",
    *,
    dtype: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    cross_documents: bool = True,
) -> TokenData:
    """Load a data source; cached per process by resolved source and settings.

    `dtype`: the token dtype of headerless `.bin` files; `tokenizer`: a tokenizer.json that
    text is encoded with; `cross_documents=False`: windows stay inside documents where the
    format marks them."""
    if dtype is not None and dtype not in RAW_DTYPES:
        raise DataError(f"data_dtype must be one of {', '.join(RAW_DTYPES)}, got {dtype!r}")
    tokenizer_path = str(Path(tokenizer).expanduser().resolve()) if tokenizer is not None else None
    return _load_resolved(*_resolve(str(source)), dtype, tokenizer_path, cross_documents)


def load_train_data(train: "TrainSettings") -> TokenData:
    """The data a trial's `[train]` settings name."""
    return load_data(
        train.data, dtype=train.data_dtype, tokenizer=train.tokenizer, cross_documents=train.cross_documents
    )


def source_path(source: str) -> Path:
    """The file or folder a data source reads (`PATH[:COLUMN]` without its column; a
    Megatron PREFIX as its .idx)."""
    if source == "stdlib":
        return Path(sysconfig.get_paths()["stdlib"])
    path = Path(source).expanduser()
    if not path.exists() and Path(f"{path}.idx").is_file():
        return Path(f"{path}.idx")
    if not path.exists() and ":" in source:
        return Path(source.rpartition(":")[0]).expanduser()
    return path


def _resolve(source: str) -> tuple[str, str, str | None]:
    """(kind, absolute path, column) for a source string."""
    if source == "stdlib":
        return "stdlib", str(source_path(source).resolve()), None
    prefix = megatron_prefix(Path(source).expanduser())
    if prefix is not None:
        return "megatron", str(prefix.resolve()), None
    path, column = source_path(source), None
    if str(path) != str(Path(source).expanduser()):
        column = source.rpartition(":")[2]
        if not column:
            raise DataError(f"{source}: empty column name after ':'")
    if not path.exists():
        raise DataError(f"{path}: data path not found")
    path = path.resolve()
    if path.is_file():
        if path.name == "index.json":
            return "mds", str(path.parent), column
        by_suffix = {".bin": "shards", ".npy": "npy", ".parquet": "parquet", ".arrow": "arrow"}
        kind = by_suffix.get(path.suffix, "text")
        if column is not None and kind not in ("parquet", "arrow"):
            raise DataError(f"{source}: a column (after ':') applies to Parquet, Arrow and MDS data only")
        return kind, str(path), column
    if not path.is_dir():
        raise DataError(f"{path}: not a regular file or folder")
    kind = _folder_kind(path)
    if column is not None and kind not in ("parquet", "arrow", "mds"):
        raise DataError(f"{source}: a column (after ':') applies to Parquet, Arrow and MDS data only")
    return kind, str(path), column


def _folder_kind(path: Path) -> str:
    if megatron_prefixes(path):
        return "megatron"
    if is_mds(path):
        return "mds"
    if (path / "state.json").is_file() or next(path.rglob("*.arrow"), None) is not None:
        return "arrow"
    if npy_files(path):
        return "npy"
    if shard_files(path):
        return "shards"
    if parquet_files(path):
        return "parquet"
    return "text"


@functools.cache
def _load_resolved(
    kind: str, path: str, column: str | None, dtype: str | None, tokenizer: str | None, cross_documents: bool
) -> TokenData:
    root = Path(path)
    if dtype is not None and kind != "shards":
        raise DataError(f"{path}: data_dtype applies to raw .bin files; this {kind} data states its own dtype")
    if kind in TOKEN_KINDS or kind in ("parquet", "arrow") and _holds_tokens(kind, root, column):
        if tokenizer is not None:
            raise DataError(f"{path}: holds token ids; train.tokenizer applies to text only")
        return _token_data(kind, root, column, dtype, cross_documents)
    if kind == "stdlib" and tokenizer is None:
        return load_stdlib(root)
    split = _text_split(kind, root, column)
    return tokenized(split, Path(tokenizer), cross_documents) if tokenizer is not None else byte_level(split)


def _text_split(kind: str, root: Path, column: str | None) -> TextSplit:
    if kind == "stdlib":
        return stdlib_documents(root)
    if kind == "parquet":
        return parquet_documents(root, column or DEFAULT_PARQUET_COLUMN)
    if kind == "arrow":
        files = _arrow_paths(root)
        docs = (
            (f"{p.name}#{i}", row)
            for p in files
            for i, row in enumerate(arrow_text_rows(p, column or DEFAULT_PARQUET_COLUMN))
        )
        return split_documents(f"{root}:{column or DEFAULT_PARQUET_COLUMN}", docs)
    return text_documents(root)


def _arrow_paths(root: Path) -> list[Path]:
    files = arrow_files(root) if root.is_dir() else [root]
    if not files:
        raise DataError(f"{root}: folder has no .arrow files")
    return files


def _holds_tokens(kind: str, root: Path, column: str | None) -> bool:
    """Whether a Parquet or Arrow source's column is token ids (else text)."""
    column = column or DEFAULT_PARQUET_COLUMN
    if kind == "arrow":
        return is_token_type(arrow_column_type(_arrow_paths(root)[0], column))
    files = parquet_files(root) if root.is_dir() else [root]
    if not files:
        raise DataError(f"{root}: folder has no .parquet files")
    return is_token_type(open_parquet(files[0], column).schema_arrow.field(column).type)


def _token_files(kind: str, root: Path, column: str | None, dtype: str | None) -> list[TokenFile]:
    column_or_text = column or DEFAULT_PARQUET_COLUMN
    if kind == "shards":
        return [open_shard(p, dtype) for p in (shard_files(root) if root.is_dir() else [root])]
    if kind == "npy":
        return [open_npy(p) for p in (npy_files(root) if root.is_dir() else [root])]
    if kind == "megatron":
        return [open_megatron(p) for p in (megatron_prefixes(root) if root.is_dir() else [root])]
    if kind == "mds":
        return open_mds(root, column)
    if kind == "arrow":
        return [open_arrow_tokens(p, column_or_text) for p in _arrow_paths(root)]
    return [open_parquet_tokens(p, column_or_text) for p in (parquet_files(root) if root.is_dir() else [root])]


def _token_data(kind: str, root: Path, column: str | None, dtype: str | None, cross_documents: bool) -> TokenData:
    files = _token_files(kind, root, column, dtype)
    name = str(root) if column is None else f"{root}:{column}"
    train, val = split_token_files(name, files, root if root.is_dir() else None, cross_documents)
    ranges = [(f.token_range(), f.path) for f in files]
    (lo, low_file) = min((r[0], p) for r, p in ranges)
    if lo < 0:
        raise DataError(f"{low_file}: holds a negative token id ({lo})")
    (hi, high_file) = max((r[1], p) for r, p in ranges)
    for f in files:  # pages the open touched (MDS sample headers, Arrow batch metadata)
        release(f.maps)
    return TokenData(name, hi + 1, f"its largest token is {hi}, in {high_file}", train, val)
