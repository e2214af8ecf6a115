"""NumPy `.npy` token files: any integer dtype, 1-D (one stream) or 2-D (one row per
sequence, each row a document). Read through the header, then mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telescope.data.tokens import TokenFile, file_identity, map_file, view
from telescope.errors import DataError

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npy_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.npy") if p.is_file())


def open_npy(path: Path) -> TokenFile:
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f"format version {version[0]}.{version[1]} not supported")
            shape, fortran_order, dtype = _HEADER_READERS[version](f)
        except ValueError as e:
            raise DataError(f"{path}: not a readable .npy file ({str(e).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (a ragged array?); save tokens as a 1-D or 2-D integer array")
    if dtype.kind not in "iu":
        raise DataError(f"{path}: holds {dtype.name} values, not integer token ids")
    if len(shape) not in (1, 2):
        raise DataError(f"{path}: has {len(shape)} dimensions; expected 1 (a stream) or 2 (one row per sequence)")
    if len(shape) == 2 and fortran_order and shape[0] > 1 and shape[1] > 1:
        raise DataError(f"{path}: is stored column-major (Fortran order); save it row-major, one row per sequence")
    count = int(np.prod(shape))
    if count == 0:
        raise DataError(f"{path}: holds no tokens")
    present = (path.stat().st_size - offset) // dtype.itemsize
    if present < count:
        raise DataError(f"{path}: truncated: header says {count} tokens, file has {present}")
    mapped = map_file(path)
    docs = np.arange(shape[0] + 1, dtype=np.int64) * shape[1] if len(shape) == 2 else None
    return TokenFile(path, view(mapped, dtype, offset, count), docs, (mapped,), file_identity(path, "npy"))
