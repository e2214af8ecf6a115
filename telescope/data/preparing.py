"""Progress of the work a data source's first open does once and caches: finding the
largest token of a file, converting a Parquet token column, encoding text with the user's
tokenizer. At pretraining scale that is seconds to minutes (reading 4 GB from a disk at
0.5 GB/s), after which every open, in every trial, reads the cache.

On a terminal it is a bar on stderr, gone when the work is done; in a log, one line for
work of SHOW_BYTES or more; nothing for work too small to wait for.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text

SHOW_BYTES = 256 << 20


@contextmanager
def preparing(description: str, total_bytes: int) -> Iterator[Callable[[int], None]]:
    """Show `description` (e.g. `finding the largest token of tokens.bin`) while the body
    works through `total_bytes`; the body reports each chunk's bytes to the callable."""
    console = Console(stderr=True)
    if total_bytes < SHOW_BYTES:
        yield lambda done: None
        return
    if not console.is_terminal:
        size = f"{total_bytes / (1 << 30):.1f} GiB"
        console.print(Text(f"{description} ({size}; once, later opens read the cache)"), soft_wrap=True)
        yield lambda done: None
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total_bytes)
        yield lambda done: progress.advance(task, done)
