"""The validation split (README "Training data"), the same rules for every format.

1. A folder whose file names mark validation (`val`, `valid`, `validation` as a word of the
   name) holds those files out.
2. Else, where documents are known (files and rows of text, the documents of a Megatron,
   Arrow, Parquet, MDS or 2-D .npy dataset), a hash of each document's key holds out about
   `VAL_DOC_FRACTION` of them.
3. Else, or when the hash leaves a side empty, the last `VAL_TAIL_FRACTION` of the last
   file is held out.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from telescope.data.corpus import Stream
from telescope.data.tokens import TokenFile
from telescope.errors import DataError

VAL_DOC_FRACTION = 0.02  # share of documents held out, chosen by a hash of their key
VAL_TAIL_FRACTION = 0.1  # share of a single file held out from its end
_VAL_NAME_PARTS = {"val", "valid", "validation"}


def is_val_name(path: Path) -> bool:
    return any(part in _VAL_NAME_PARTS for part in re.split(r"[^a-z0-9]+", path.stem.lower()))


def is_val_document(key: str) -> bool:
    """Byte-level and tokenizer text: documents keyed by file name (and row)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < VAL_DOC_FRACTION * 2**64


def val_documents(ordinals: np.ndarray) -> np.ndarray:
    """Token datasets: documents keyed by their position in the dataset (splitmix64 of it),
    so the same documents split alike in every format."""
    z = ordinals.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z < np.uint64(int(VAL_DOC_FRACTION * 2**64))


def tail_length(n: int) -> int:
    return max(1, int(n * VAL_TAIL_FRACTION))


def split_token_files(
    name: str, files: Sequence[TokenFile], root: Path | None, cross_documents: bool
) -> tuple[Stream, Stream]:
    """(train, validation) streams over the token files of a folder `root` (None: one file)."""
    held_out = [root is not None and _val_named(f.path, root) for f in files]
    if not all(held_out) and any(held_out):
        return streams_by_file(files, held_out, cross_documents)
    if all(held_out):
        raise DataError(f"{name}: no training files (only {', '.join(f.path.name for f in files)})")
    sides = _Sides(files, cross_documents)
    if any(f.docs is not None for f in files) and _hash_split(files, sides):
        return sides.streams()
    return tail_split(files, cross_documents)


def streams_by_file(
    files: Sequence[TokenFile], held_out: Sequence[bool], cross_documents: bool
) -> tuple[Stream, Stream]:
    sides = _Sides(files, cross_documents)
    for i, (f, val) in enumerate(zip(files, held_out)):
        sides.add(i, 0, len(f.tokens), val=val)
    return sides.streams()


def tail_split(files: Sequence[TokenFile], cross_documents: bool) -> tuple[Stream, Stream]:
    """Every file to training but the last VAL_TAIL_FRACTION of the last one."""
    sides = _Sides(files, cross_documents)
    last = len(files) - 1
    n = len(files[last].tokens)
    for i in range(last):
        sides.add(i, 0, len(files[i].tokens), val=False)
    sides.add(last, 0, n - tail_length(n), val=False)
    sides.add(last, n - tail_length(n), n, val=True)
    return sides.streams()


def _val_named(path: Path, root: Path) -> bool:
    """A val-named file, or a file in a val-named folder (a Hugging Face DatasetDict's split)."""
    return any(is_val_name(Path(part)) for part in path.relative_to(root).parts)


def _hash_split(files: Sequence[TokenFile], sides: "_Sides") -> bool:
    """Documents to the side their ordinal hashes to; False if a side would be empty."""
    first_ordinal, masks = 0, []
    for f in files:
        n_docs = len(f.docs) - 1 if f.docs is not None else 1
        masks.append(val_documents(np.arange(first_ordinal, first_ordinal + n_docs)))
        first_ordinal += n_docs
    held_out = int(sum(m.sum() for m in masks))
    if held_out == 0 or held_out == first_ordinal:
        return False
    for i, (f, mask) in enumerate(zip(files, masks)):
        docs = f.docs if f.docs is not None else np.array([0, len(f.tokens)], dtype=np.int64)
        change = np.flatnonzero(np.diff(mask)) + 1  # runs of consecutive documents on one side
        run_starts = np.concatenate([[0], change])
        run_ends = np.concatenate([change, [len(mask)]])
        for val in (False, True):
            on_side = mask[run_starts] == val
            sides.add(i, docs[run_starts[on_side]], docs[run_ends[on_side]], val=val)
    return True


class _Sides:
    """Segments of the train and validation streams, collected file by file."""

    def __init__(self, files: Sequence[TokenFile], cross_documents: bool) -> None:
        self.files, self.cross = files, cross_documents
        self.parts: dict[bool, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {False: [], True: []}

    def add(self, i: int, lo: Any, hi: Any, val: bool) -> None:
        """Sorted, disjoint token ranges [lo, hi) of file i as segments, cut at document starts
        when windows stay in documents."""
        lo, hi = np.atleast_1d(lo).astype(np.int64), np.atleast_1d(hi).astype(np.int64)
        docs = self.files[i].docs
        if not self.cross and docs is not None and len(lo):
            cuts = np.union1d(docs, np.concatenate([lo, hi]))
            inside = np.maximum(np.searchsorted(lo, cuts[:-1], side="right") - 1, 0)
            keep = (lo[inside] <= cuts[:-1]) & (cuts[:-1] < hi[inside])
            lo, hi = cuts[:-1][keep], cuts[1:][keep]
        keep = hi > lo
        self.parts[val].append((np.full(int(keep.sum()), i, dtype=np.int64), lo[keep], (hi - lo)[keep]))

    def streams(self) -> tuple[Stream, Stream]:
        tokens, maps = tuple(f.tokens for f in self.files), tuple(f.maps for f in self.files)
        out = []
        for val in (False, True):
            parts = self.parts[val] or [(np.zeros(0, np.int64),) * 3]
            out.append(Stream(tokens, *(np.concatenate(column) for column in zip(*parts)), maps=maps))
        return out[0], out[1]
