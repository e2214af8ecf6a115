"""Checks a command makes on its outputs and sizes before it trains anything, so that a bad
path or a width that cannot fit is one line at the start, not an error after hours of work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from telescope.errors import TelescopeError
from telescope.files import cannot_write, check_writable_folder
from telescope.spec import ModelShape

# fp32 weights, gradients and two optimizer states (Adam's moments; Muon keeps one, AdamW
# two): a lower bound on a trial's memory, before any activation.
BYTES_PER_PARAMETER = 16


def check_plot_file(path: Path, option: str = "--plot") -> None:
    """A file that can be written: not a folder, in a folder that exists and takes files,
    and not itself read-only or immutable."""
    if path.is_dir():
        raise TelescopeError(f"{option} {path}: it is a folder, not a file")
    if not path.parent.is_dir():
        raise TelescopeError(f"{option} {path}: folder {path.parent} does not exist")
    check_writable_folder(path.parent)
    if path.exists():
        try:
            with open(path, "ab"):  # appends nothing: only asks whether the file may change
                pass
        except OSError as e:
            raise cannot_write(path, e) from None


def check_widths_fit(shape: ModelShape, widths: Iterable[int], device: str, option: str) -> None:
    """Refuse a width whose parameters, gradients and optimizer state alone would not fit in
    the memory of `device` ("auto", "cpu", "cuda", "cuda:N", "mps")."""
    from telescope.cost import param_counts

    width = max(widths)
    parameters = param_counts(shape, width).total
    needed = BYTES_PER_PARAMETER * parameters
    available, where = _memory(device)
    if needed > available:
        raise TelescopeError(
            f"{option}: width {width} has {parameters:,} parameters, which need at least {needed / 2**30:,.1f} GiB "
            f"for weights, gradients and optimizer state; {where} has {available / 2**30:,.1f} GiB"
        )


def _memory(device: str) -> tuple[int, str]:
    """Total memory of the device a trial would use, and its name for the message."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        index = torch.device("cuda" if device == "auto" else device).index or 0
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
