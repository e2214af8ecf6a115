"""Files written whole or not at all, readable as the user's umask says, and one line on failure.

Every file telescope writes (exports, figures, reports, step metrics, the corpus cache)
goes through `atomic_write`: the bytes land in a hidden temporary file in the target's
folder, which is renamed over the target once complete, so a reader, or a writer killed
midway, never sees half a file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from telescope.errors import TelescopeError


@functools.cache
def _file_mode() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def cannot_write(path: Path, error: OSError) -> TelescopeError:
    return TelescopeError(f"cannot write {path}: {error.strerror or error}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], make_parents: bool = False) -> Iterator[BinaryIO]:
    """Open a temporary file to write `path`'s new content; on a clean exit it replaces
    `path`. An OSError (missing folder, a folder in the way, no permission, a full or
    read-only disk) is a TelescopeError naming the path, and leaves nothing behind."""
    path = Path(path)
    tmp: str | None = None
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp's 0600 would hide the file from everyone else
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Raise a TelescopeError unless files can be written in `folder` (created if missing).
    A folder created only for the check is removed again."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise cannot_write(folder, e) from None
    finally:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
