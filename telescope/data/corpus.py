"""A loaded corpus: train and validation streams, and the batches drawn from them.

A stream is a list of token files (1-D arrays, memory-mapped where the source is a
token file) and the segments of them that windows are drawn from: whole files, or
single documents when windows must not cross documents. A window of seq_len + 1
tokens never leaves its segment.

Training windows are drawn uniformly from a generator seeded by (seed, step), so every
trial with the same seed sees the same batches in the same order. Validation windows are
evenly spaced over the held-out stream, the same for every trial.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from telescope.data.tokens import release
from telescope.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class Stream:
    """Token files and the segments (file, start, length) windows are drawn from."""

    files: tuple[Any, ...]  # 1-D token sequences: numpy arrays, or telescope.data.tokens.Runs
    file_of: np.ndarray
    start: np.ndarray
    length: np.ndarray
    maps: tuple[tuple[mmap.mmap, ...], ...] = ()  # per file, the mappings a gather hands back
    _ends: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of_files(cls, files: Sequence[Any]) -> "Stream":
        """Each file one segment."""
        n = len(files)
        lengths = np.array([len(f) for f in files], dtype=np.int64)
        return cls(tuple(files), np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), lengths)

    @property
    def tokens(self) -> int:
        return int(self.length.sum())

    def segments(self) -> tuple[Any, ...]:
        """The token runs windows are drawn from, in order."""
        return tuple(
            self.files[f][s : s + n]
            for f, s, n in zip(self.file_of.tolist(), self.start.tolist(), self.length.tolist())
        )

    def window_counts(self, length: int) -> np.ndarray:
        return np.maximum(self.length - (length - 1), 0)

    def window_ends(self, length: int) -> np.ndarray:
        """Cumulative window counts; computed once per window length."""
        if length not in self._ends:
            self._ends[length] = np.cumsum(self.window_counts(length))
        return self._ends[length]

    def gather(self, ids: np.ndarray, length: int) -> np.ndarray:
        """Windows `ids` of the concatenated window index space, as an int64 (len(ids), length) array."""
        ends = self.window_ends(length)
        segment = np.searchsorted(ends, ids, side="right")
        first_window = ends[segment] - self.window_counts(length)[segment]
        position = self.start[segment] + (ids - first_window)
        file_of = self.file_of[segment]
        offsets = np.arange(length)
        out = np.empty((len(ids), length), dtype=np.int64)
        for f in np.unique(file_of):
            rows = np.flatnonzero(file_of == f)
            out[rows] = self.files[f][position[rows][:, None] + offsets]
            if self.maps:
                release(self.maps[f])
        return out


@dataclass(frozen=True, eq=False)
class TokenData:
    """A train and a validation token stream, and the vocabulary they need."""

    name: str
    vocab_size: int
    vocab_source: str  # why vocab_size is what it is, for error messages
    train_stream: Stream
    val_stream: Stream

    @property
    def train(self) -> tuple[Any, ...]:
        return self.train_stream.segments()

    @property
    def val(self) -> tuple[Any, ...]:
        return self.val_stream.segments()

    @property
    def train_tokens(self) -> int:
        return self.train_stream.tokens

    @property
    def val_tokens(self) -> int:
        return self.val_stream.tokens

    def check_seq_len(self, seq_len: int) -> None:
        """Raise DataError unless both splits hold at least one window of seq_len + 1 tokens."""
        for split, stream in (("train", self.train_stream), ("validation", self.val_stream)):
            if stream.window_ends(seq_len + 1)[-1:].sum() == 0:
                where = "documents" if len(stream.length) > len(stream.files) else "files"
                raise DataError(
                    f"{self.name}: {split} split has {stream.tokens} tokens in {where} too short for one "
                    f"sequence of seq_len+1 = {seq_len + 1} tokens"
                )

    def check_vocab(self, model_vocab_size: int) -> None:
        """A ConfigError naming the largest token and its file when the model's vocabulary is too small."""
        if self.vocab_size > model_vocab_size:
            raise ConfigError(
                f"model.vocab_size is {model_vocab_size} but the data {self.name!r} needs {self.vocab_size} "
                f"({self.vocab_source}): raise it, set model.vocab_size = {self.vocab_size}"
            )

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, int64 (batch_size, seq_len); a pure function of (seed, step)."""
        self.check_seq_len(seq_len)
        total = int(self.train_stream.window_ends(seq_len + 1)[-1])
        rng = np.random.default_rng([seed % 2**64, step % 2**64])
        ids = rng.integers(0, total, size=batch_size)
        return _as_pair(self.train_stream.gather(ids, seq_len + 1))

    def val_batches(self, n: int, batch_size: int, seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`n` fixed held-out batches: windows evenly spaced over the validation stream."""
        self.check_seq_len(seq_len)
        total = int(self.val_stream.window_ends(seq_len + 1)[-1])
        k = n * batch_size
        ids = np.arange(k, dtype=np.int64) * total // max(k, 1)
        windows = self.val_stream.gather(ids, seq_len + 1)
        return [_as_pair(windows[i * batch_size : (i + 1) * batch_size]) for i in range(n)]

    def __repr__(self) -> str:
        return (
            f"TokenData({self.name!r}, vocab_size={self.vocab_size}, "
            f"train_tokens={self.train_tokens}, val_tokens={self.val_tokens})"
        )


def _as_pair(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(windows[:, :-1])),
        torch.from_numpy(np.ascontiguousarray(windows[:, 1:])),
    )
