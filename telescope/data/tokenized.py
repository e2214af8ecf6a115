"""Text through the user's own tokenizer (`[train] tokenizer = "PATH/tokenizer.json"`).

The `tokenizers` library, offline. Each document is encoded with the tokenizer's own
special tokens (its post-processor decides BOS/EOS). The tokens are cached on disk, keyed
by the documents' content, the tokenizer file's hash and the split, so a second run reads
the cache and a changed file or tokenizer tokenizes again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from telescope.data.corpus import TokenData
from telescope.data.preparing import preparing
from telescope.data.split import streams_by_file, tail_split
from telescope.data.text import TextSplit, cache_dir
from telescope.data.tokens import TokenFile, file_identity, map_file, view
from telescope.errors import DataError, TelescopeError
from telescope.files import atomic_write

_CACHE_FORMAT = 1
_BATCH_DOCS = 256


def read_tokenizer(path: Path) -> tuple[Any, str]:
    """(tokenizer, content hash); DataError when the file is missing or not a tokenizer."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    content = path.read_bytes()
    try:
        tokenizer = Tokenizer.from_str(content.decode("utf-8"))
    except Exception as e:  # the library raises plain Exceptions for malformed JSON or models
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a tokenizers tokenizer.json ({first})") from None
    return tokenizer, hashlib.blake2b(content, digest_size=16).hexdigest()


def tokenized(split: TextSplit, tokenizer_path: Path, cross_documents: bool) -> TokenData:
    tokenizer, tokenizer_hash = read_tokenizer(tokenizer_path)
    key = hashlib.blake2b(f"v{_CACHE_FORMAT}|{tokenizer_hash}|{split.tail}".encode(), digest_size=16)
    for side in (split.train, split.val):
        key.update(len(side).to_bytes(8, "little"))
        for doc in side:
            key.update(hashlib.blake2b(doc, digest_size=16).digest())
    stem = cache_dir() / "tokenized" / key.hexdigest()
    sides = [("train", split.train)] + ([] if split.tail else [("val", split.val)])
    files = [_cached_side(stem, side, docs, tokenizer) for side, docs in sides]
    train, val = (
        tail_split(files, cross_documents) if split.tail else streams_by_file(files, [False, True], cross_documents)
    )
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    top = max(f.token_range()[1] for f in files)
    if top >= vocab:
        raise DataError(f"{tokenizer_path}: encoded token {top}, beyond its vocabulary of {vocab}")
    return TokenData(f"{split.name} ({tokenizer_path.name})", vocab, f"the vocabulary of {tokenizer_path}", train, val)


def _cached_side(stem: Path, side: str, docs: list[bytes], tokenizer: Any) -> TokenFile:
    tokens_path, docs_path = Path(f"{stem}-{side}.u32"), Path(f"{stem}-{side}.docs.npy")
    if not docs_path.is_file():
        _encode(docs, tokenizer, tokens_path, docs_path)
    starts = np.load(docs_path)
    if starts[-1] == 0:
        raise DataError(f"{stem.name}: the tokenizer made no tokens of the {side} documents")
    mapped = map_file(tokens_path)
    return TokenFile(
        tokens_path, view(mapped, "<u4", 0, int(starts[-1])), starts, (mapped,), file_identity(tokens_path, "u32")
    )


def _encode(docs: list[bytes], tokenizer: Any, tokens_path: Path, docs_path: Path) -> None:
    lengths = [0]
    try:
        with (
            preparing(f"tokenizing {len(docs):,} documents", sum(map(len, docs))) as advance,
            atomic_write(tokens_path, make_parents=True) as f,
        ):
            for i in range(0, len(docs), _BATCH_DOCS):
                batch = docs[i : i + _BATCH_DOCS]
                texts = [d.decode("utf-8", errors="replace") for d in batch]
                for encoding in tokenizer.encode_batch(texts, add_special_tokens=True):
                    f.write(np.asarray(encoding.ids, dtype="<u4").tobytes())
                    lengths.append(len(encoding.ids))
                advance(sum(map(len, batch)))
        with atomic_write(docs_path) as f:
            np.save(f, np.cumsum(lengths, dtype=np.int64))
    except TelescopeError as e:
        raise DataError(f"cannot cache the tokenized text: {e}") from None
