"""`from telescope import ...`: every public name is there, imported on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import telescope

ROOT = Path(__file__).resolve().parents[1]


def test_import_telescope_loads_neither_torch_nor_ray() -> None:
    code = (
        "import sys, json, telescope\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'pandas', 'sqlalchemy'))\n"
        "telescope.load_config\n"
        "after_config = 'torch' in sys.modules\n"
        "telescope.build_foreign_optimizers\n"
        "print(json.dumps([heavy, after_config, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, torch_after_config, torch_after_foreign = json.loads(out)
    assert heavy == [] and not torch_after_config and torch_after_foreign


def test_every_public_name_resolves() -> None:
    for name in telescope.__all__:
        assert getattr(telescope, name) is not None, name
    assert set(telescope.__all__) <= set(dir(telescope))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        telescope.nope  # noqa: B018


def test_the_api_does_what_the_cli_does() -> None:
    from telescope import ConfigError, TelescopeError, load_config, plan, transfer

    config = load_config(ROOT / "examples/tiny-cpu.toml")
    p = plan(config)
    assert [lc.width for lc in p.levels] == [32, 64, 128] and p.sweep_trials == 43
    from telescope.proxy.model import parameter_roles

    groups = transfer(
        "paper", lr=0.04, weight_decay=0.1, base_width=32, width=512, parameters=parameter_roles(config.model, 512, 32)
    )
    assert {g.role: g.lr for g in groups}["hidden"] == pytest.approx(0.04 / 16)
    assert issubclass(ConfigError, TelescopeError)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(ROOT / "examples/missing.toml")


def test_the_names_the_issue_lists_are_there() -> None:
    for name in (
        "load_config",
        "plan",
        "run_sweep",
        "export_sweep",
        "Database",
        "MetricsStore",
        "run_trial",
        "TrialSpec",
        "coord_check",
        "transfer",
        "build_foreign_optimizers",
        "optimizers_from_export",
        "plot_sweep",
        "write_report",
    ):
        assert callable(getattr(telescope, name)), name
