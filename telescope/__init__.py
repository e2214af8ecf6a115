"""telescope: telescoping muP + Muon hyperparameter sweeps.

Everything the command line does, from Python (each name is imported on first use, so
`import telescope` stays cheap and loads neither torch nor Ray):

    from telescope import load_config, plan, run_sweep, make_executor, Database, MetricsStore, export_sweep

    config = load_config("examples/tiny-cpu.toml")
    print(plan(config).ratio)                       # telescope plan
    executor = make_executor(config.executor)
    with Database("sqlite:///telescope.db") as db:  # telescope sweep
        result = run_sweep(config, db, MetricsStore("telescope-metrics"), "tiny-cpu", executor=executor)
        payload = export_sweep(db, "tiny-cpu")      # telescope export
    executor.close()

Your own model: `optimizers_from_export(model, "export.json")` (see telescope.models.foreign).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # config, plan, sweep (telescope plan / sweep)
    "load_config": "telescope.config",
    "parse_config": "telescope.config",
    "SweepConfig": "telescope.config",
    "plan": "telescope.cost",
    "Plan": "telescope.cost",
    "run_sweep": "telescope.sweep",
    "make_executor": "telescope.runs.executor",
    "ExecutorSettings": "telescope.trials",
    # storage (telescope status / query)
    "Database": "telescope.storage",
    "MetricsStore": "telescope.storage",
    "run_query": "telescope.storage",
    # results (telescope export / plot / report)
    "export_sweep": "telescope.export",
    "render_export": "telescope.export",
    "plot_sweep": "telescope.report",
    "write_report": "telescope.report",
    "load_sweep": "telescope.report",
    # one trial, the proxy, the coord check (telescope trial / coord-check)
    "run_trial": "telescope.training.train",
    "TrialSpec": "telescope.spec",
    "TrialResult": "telescope.spec",
    "ModelShape": "telescope.spec",
    "TrainSettings": "telescope.spec",
    "StepMetrics": "telescope.spec",
    "Status": "telescope.spec",
    "build_model": "telescope.proxy.model",
    "build_optimizers": "telescope.optim.groups",
    "NameRule": "telescope.roles",
    "PROXY_RULES": "telescope.roles",
    "classify": "telescope.roles",
    "load_rules": "telescope.roles",
    "Optimizers": "telescope.optim.groups",
    "load_data": "telescope.data",
    "coord_check": "telescope.coord.study",
    "CoordCheckSettings": "telescope.coord.study",
    # parametrizations and the transfer
    "TABLES": "telescope.parametrization",
    "get_table": "telescope.parametrization",
    "transfer": "telescope.parametrization",
    "fingerprint": "telescope.parametrization",
    # your own model
    "FOREIGN_RULES": "telescope.roles",
    "KindRule": "telescope.roles",
    "classify_foreign": "telescope.models.foreign",
    "classification_report": "telescope.models.foreign",
    "parametrize": "telescope.models.foreign",
    "build_foreign_optimizers": "telescope.models.foreign",
    "optimizers_from_export": "telescope.models.foreign",
    "load_export": "telescope.models.foreign",
    "load_factory": "telescope.models.foreign",
    # errors
    "TelescopeError": "telescope.errors",
    "ConfigError": "telescope.errors",
    "DataError": "telescope.errors",
    "StorageError": "telescope.errors",
}
_RENAMED = {"render_export": "render"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'telescope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
