"""The layers of docs/design.md §7 hold: no import runs from a lower layer back up, and the
drivers never import one another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "telescope"
DRIVERS = ("telescope.sweep", "telescope.transfer_check", "telescope.batch_study")
ABOVE_RUNS = (*DRIVERS, "telescope.cli", "telescope.report", "telescope.dashboard", "telescope.export")

# package -> what it must never import (module prefixes). From the bottom up: the math
# (parametrization, roles), optim, the models (proxy, models), data, training, coord_check,
# trials, storage, runs, then the drivers and what sits above them.
MODELS_AND_UP = (
    "telescope.training",
    "telescope.coord",
    "telescope.trials",
    "telescope.storage",
    "telescope.runs",
)
FORBIDDEN = {
    "telescope.optim": (
        "telescope.config",
        "telescope.proxy",
        "telescope.models",
        "telescope.data",
        *MODELS_AND_UP,
        *ABOVE_RUNS,
    ),
    "telescope.proxy": ("telescope.config", "telescope.models", "telescope.data", *MODELS_AND_UP, *ABOVE_RUNS),
    "telescope.models": ("telescope.config", "telescope.proxy", "telescope.data", *MODELS_AND_UP, *ABOVE_RUNS),
    "telescope.data": (
        "telescope.config",
        "telescope.optim",
        "telescope.proxy",
        "telescope.models",
        *MODELS_AND_UP,
        *ABOVE_RUNS,
    ),
    "telescope.training": (
        "telescope.coord",
        "telescope.trials",
        "telescope.storage",
        "telescope.runs",
        *ABOVE_RUNS,
    ),
    "telescope.coord": ("telescope.trials", "telescope.storage", "telescope.runs", *ABOVE_RUNS),
    "telescope.trials": (
        "telescope.proxy",
        "telescope.models",
        "telescope.training",
        "telescope.coord",
        "telescope.storage",
        "telescope.runs",
        "telescope.data",
        *ABOVE_RUNS,
    ),
    "telescope.storage": ("telescope.runs", "telescope.proxy", "telescope.training", "telescope.trials", *ABOVE_RUNS),
    "telescope.runs": ABOVE_RUNS,
    "telescope.parametrization": (
        "telescope.config",
        "telescope.optim",
        "telescope.proxy",
        "telescope.runs",
        *ABOVE_RUNS,
    ),
    "telescope.sweep": ("telescope.transfer_check", "telescope.batch_study", "telescope.cli"),
    "telescope.transfer_check": ("telescope.sweep", "telescope.batch_study", "telescope.cli"),
    "telescope.batch_study": ("telescope.sweep", "telescope.transfer_check", "telescope.cli"),
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("telescope")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package: str) -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name != package and not name.startswith(package + "."):
            continue
        for imported in imports(path):
            if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN[package]):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)
