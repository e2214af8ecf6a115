"""A trial's content key: a hash of everything that decides its numbers.

The spec (model, data source, training settings, width, hyperparameters, seed), the
parametrization's fingerprint (table, Muon variant and constants, torch version), the
telescope version, and what is on disk behind names: the data files' sizes and
modification times, and the user's model factory's source file. Trials are bitwise
reproducible (a pack or a resume does not change their numbers), so a completed trial
with the same key can stand in for training it again, in any run of any kind.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from telescope.spec import TrialSpec
from telescope.storage.rows import config_hash


def content_key(spec: TrialSpec) -> str:
    from telescope.parametrization import fingerprint

    return config_hash(
        {
            "spec": spec.to_dict(),
            "fingerprint": fingerprint(spec.parametrization, spec.muon_lr_ratio),
            "telescope": _version(),
            "data": _data_identity(spec.train.data),
            "factory": _factory_identity(spec.model_factory) if spec.model_factory else None,
        }
    )


@functools.cache
def _version() -> str:
    try:
        return metadata.version("telescope")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _data_identity(source: str) -> Any:
    from telescope.proxy.data import source_path

    if source == "stdlib":  # the running interpreter's standard library
        return [sys.version, str(source_path(source))]
    path = source_path(source)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [source] + [[str(p.relative_to(path) if path.is_dir() else p.name), *_stat(p)] for p in files]


def _factory_identity(factory: str) -> Any:
    module = factory.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    origin = found.origin if found is not None else None
    return [factory, *_stat(Path(origin))] if origin and os.path.isfile(origin) else [factory]


def _stat(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns]
