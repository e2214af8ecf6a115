"""Raw token files (`.bin`): nanoGPT (uint16, no header), modded-nanogpt (a 256 x int32
header with magic 20240520, version 1 and the token count, then uint16 tokens), and any
headerless file whose dtype the config states (`[train] data_dtype`).

A headerless file is read as uint16 only as the documented nanoGPT default, and then only if
it does not look like 32-bit tokens: every odd uint16 half 0 or 1 among the first 2^20, as
little-endian 32-bit tokens below 131,072 (Llama 3's 128,256 included) would have."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from telescope.data.tokens import TokenFile, file_identity, map_file, view
from telescope.errors import DataError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
RAW_DTYPES = ("uint16", "uint32", "int32")
_MODDED_SHARD_NAME = re.compile(r".+_(train|val)_\d+\.bin$")
_SNIFF_TOKENS = 1 << 20  # uint16 values looked at for 32-bit tokens


def shard_files(root: Path) -> list[Path]:
    """A folder's `.bin` files that are not halves of a Megatron dataset."""
    return sorted(p for p in root.glob("*.bin") if p.is_file() and not p.with_suffix(".idx").is_file())


def open_shard(path: Path, dtype: str | None) -> TokenFile:
    """Map one shard's tokens, checking its header or byte count."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty")
    header = np.fromfile(path, dtype="<i4", count=min(SHARD_HEADER_INTS, size // 4))
    has_magic = len(header) > 0 and header[0] == SHARD_MAGIC
    if _MODDED_SHARD_NAME.match(path.name) and not has_magic:
        found = int(header[0]) if len(header) else None
        raise DataError(f"{path}: bad magic {found} in modded-nanogpt shard header (expected {SHARD_MAGIC})")
    if has_magic:
        return _modded_shard(path, size, header, dtype)
    itemsize = np.dtype(dtype or "uint16").itemsize
    if size % itemsize:
        if dtype is None:
            raise DataError(f"{path}: odd byte count ({size}), not a uint16 token file")
        raise DataError(f"{path}: data_dtype {dtype!r} ({itemsize} bytes) does not divide the file size ({size} bytes)")
    mapped = map_file(path)
    tokens = view(mapped, dtype or "uint16", 0, size // itemsize)
    if dtype is None:
        sniff = tokens[: _SNIFF_TOKENS - _SNIFF_TOKENS % 2]
        if len(sniff) >= 2 and sniff[1::2].max() <= 1 and sniff[::2].max() > 1:
            raise DataError(
                f"{path}: looks like 32-bit tokens (every odd uint16 half is 0 or 1); "
                f'set [train] data_dtype = "uint32" (or "int32")'
            )
    return TokenFile(path, tokens, None, (mapped,), file_identity(path, f"raw-{dtype or 'uint16'}"))


def _modded_shard(path: Path, size: int, header: np.ndarray, dtype: str | None) -> TokenFile:
    header_bytes = SHARD_HEADER_INTS * 4
    if dtype not in (None, "uint16"):
        raise DataError(f"{path}: a modded-nanogpt shard (uint16 tokens), but data_dtype is {dtype!r}")
    if size < header_bytes:
        raise DataError(f"{path}: truncated shard header ({size} bytes, expected {header_bytes})")
    if header[1] != SHARD_VERSION:
        raise DataError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    declared, present = int(header[2]), (size - header_bytes) // 2
    if declared < 0 or present < declared:
        raise DataError(f"{path}: truncated shard: header says {declared} tokens, file has {present}")
    if declared == 0:
        raise DataError(f"{path}: shard holds no tokens")
    mapped = map_file(path)
    return TokenFile(
        path, view(mapped, "uint16", header_bytes, declared), None, (mapped,), file_identity(path, "modded")
    )
