"""The sweep configuration: one TOML file, parsed once into frozen dataclasses.

Each section becomes the dataclass of the module that uses it ([model] -> ModelShape,
[train] -> TrainSettings, [executor] -> ExecutorSettings, [widths]/[narrowing] ->
telescope.search), so each module sees only its own section. Every invalid field is a
ConfigError whose one line starts with the field's dotted name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from telescope.errors import ConfigError
from telescope.model_config import (
    SOURCE_KEYS,
    Depths,
    check_user_widths,
    model_table,
    parse_depths,
    parse_source,
    shallow_proxy,
    user_model_shape,
)
from telescope.models import ModelSource
from telescope.search import Axis, LevelPlan, Narrowing, Widths, plan_levels
from telescope.spec import (
    SWEEPABLE,
    ModelShape,
    TrainSettings,
    TrialSpec,
    check_token_count,
)
from telescope.trials.base import ExecutorSettings

# Names of the tables in telescope.parametrization.TABLES, kept here so loading a config
# does not import torch (a test checks the two agree).
PARAMETRIZATIONS = ("paper", "muon", "adamw", "sp")
Objective = Literal["val_loss", "train_loss"]

# Searched when the config does not mention them; the lr range is centred on the
# `paper` table's default eta0 (0.024 at width 64), spacing 2x.
DEFAULT_AXES = {
    "lr": Axis("lr", 0.003, 0.192, 7),
    "weight_decay": Axis("weight_decay", 0.00625, 0.4, 7),
}
DEFAULT_FIXED = {"muon_lr_ratio": 1.0}
MAX_POINTS = 100  # per hyperparameter at level 0 (the paper used 8)
MAX_LEVEL_TRIALS = 10_000


@dataclass(frozen=True)
class SearchSpace:
    """Swept hyperparameters (log ranges) and the ones held fixed, in SWEEPABLE order."""

    axes: tuple[Axis, ...]
    fixed: tuple[tuple[str, float], ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def centre(self) -> dict[str, float]:
        """Every hyperparameter at its fixed value or the middle (in log space) of its range."""
        return dict(self.fixed) | {a.name: math.sqrt(a.lo * a.hi) for a in self.axes}


@dataclass(frozen=True)
class SeedSettings:
    per_point: int = 1  # trials per grid point, averaged
    base: int = 0  # seeds are base, base + 1, ...
    early_stop: bool = False  # stop when a level is not significantly better (needs per_point >= 2)
    significance: float = 0.05  # one-sided Welch t-test level for early_stop

    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.base, self.base + self.per_point))


@dataclass(frozen=True)
class SweepConfig:
    model: ModelShape
    widths: Widths
    train: TrainSettings
    search: SearchSpace
    narrowing: Narrowing = field(default_factory=Narrowing)
    seeds: SeedSettings = field(default_factory=SeedSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    objective: Objective = "val_loss"
    parametrization: str = "paper"
    name: str | None = None
    source: ModelSource = field(default_factory=ModelSource)  # the user's own model, if named
    depths: Depths | None = None  # shallow proxies for a deep target; None: model.depth throughout

    @property
    def target_depth(self) -> int:  # what the export is for: [depths] target, else the proxies' depth
        return self.depths.target if self.depths is not None else self.model.depth

    @property
    def user_model(self) -> bool:
        return self.source.factory is not None or self.source.hf_config is not None

    def trial_spec(self, width: int, point: Mapping[str, float], seed: int) -> TrialSpec:
        """The trial for one grid point (`point` holds exactly the swept hyperparameters)."""
        if set(point) != set(self.search.names()):
            raise ValueError(f"point {dict(point)} must set exactly {self.search.names()}")
        values = dict(self.search.fixed) | {k: float(v) for k, v in point.items()}
        return TrialSpec(
            width=width,
            base_width=self.widths.base,
            parametrization=self.parametrization,
            seed=seed,
            model=self.model,
            train=self.train,
            **self.source.carried(),
            **values,
        )

    def levels(self) -> list[LevelPlan]:
        """Width and expected grid shape of every level."""
        return plan_levels(self.widths, self.search.axes, self.narrowing, self.seeds.per_point)

    def to_dict(self) -> dict[str, Any]:
        """Every setting with defaults filled in; `parse_config(c.to_dict()) == c`."""
        search: dict[str, Any] = {a.name: {"lo": a.lo, "hi": a.hi, "points": a.points} for a in self.search.axes}
        search |= {k: {"value": v} for k, v in self.search.fixed}
        model = model_table(self.model, self.source, shallow=self.depths is not None)
        d = {
            "name": self.name,
            "objective": self.objective,
            "parametrization": self.parametrization,
            "model": model,
            "depths": dataclasses.asdict(self.depths) if self.depths is not None else None,
            "widths": dataclasses.asdict(self.widths),
            "train": dataclasses.asdict(self.train),
            "search": search,
            "narrowing": dataclasses.asdict(self.narrowing),
            "seeds": dataclasses.asdict(self.seeds),
            "executor": dataclasses.asdict(self.executor),
        }
        return _drop_none(d)

    def canonical_json(self) -> str:
        """Stable text of the whole config; a sweep compares it on resume."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config; ConfigError (one line naming the field) if wrong."""
    return parse_config(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TOML document of a sweep config, not yet validated."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(e))}") from None
    return data


def parse_config(data: Mapping[str, Any]) -> SweepConfig:
    """Validate an already-parsed TOML document (a dict) into a SweepConfig."""
    _check_keys(data, [f.name for f in dataclasses.fields(SweepConfig) if f.name != "source"], "")
    model_table = _table(data, "model")
    source = parse_source({k: v for k, v in model_table.items() if k in SOURCE_KEYS})
    model_table = {k: v for k, v in model_table.items() if k not in SOURCE_KEYS}
    model = _build(ModelShape, model_table, "model", _MODEL_RULES)
    depths = parse_depths(data, model_table, source)
    if depths is not None:
        model = shallow_proxy(model, model_table, depths)
    widths = _build(Widths, _table(data, "widths", required=True), "widths", _WIDTH_RULES)
    if source.factory is None and source.hf_config is None:
        _check_widths(widths, model)
    else:
        model = user_model_shape(model, model_table, source)
        check_user_widths(widths, source)
    train = _build(TrainSettings, _table(data, "train"), "train", _TRAIN_RULES)
    if train.warmup_steps > train.steps:
        raise ConfigError(f"train.warmup_steps: must be <= train.steps ({train.steps}), got {train.warmup_steps}")
    check_token_count(train, model.seq_len)
    search = _parse_search(_table(data, "search"))
    narrowing = _build(Narrowing, _table(data, "narrowing"), "narrowing", _NARROWING_RULES)
    _check_narrowing(narrowing, search)
    seeds = _build(SeedSettings, _table(data, "seeds"), "seeds", _SEED_RULES)
    if seeds.early_stop and seeds.per_point < 2:
        raise ConfigError("seeds.early_stop: needs seeds.per_point >= 2 to measure noise")
    executor = _build(ExecutorSettings, _table(data, "executor"), "executor", _EXECUTOR_RULES)
    top = {k: data[k] for k in ("objective", "parametrization", "name") if k in data}
    objective = _coerce(top.get("objective", "val_loss"), Objective, "objective")
    parametrization = _coerce(top.get("parametrization", "paper"), str, "parametrization")
    if parametrization not in PARAMETRIZATIONS:
        raise ConfigError(
            f"parametrization: unknown {parametrization!r}{_did_you_mean(parametrization, PARAMETRIZATIONS)}"
            f" (choose from {', '.join(PARAMETRIZATIONS)})"
        )
    name = _coerce(top.get("name"), str | None, "name")
    if name is not None and not name.strip():
        raise ConfigError("name: must not be empty")
    return SweepConfig(
        model, widths, train, search, narrowing, seeds, executor, objective, parametrization, name, source, depths
    )


# --------------------------------------------------------------------------- section rules

Rule = Callable[[Any], str | None]


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _between(lo: float, hi: float, lo_open: bool = False) -> Rule:
    def rule(v: float) -> str | None:
        ok = (lo < v if lo_open else lo <= v) and v <= hi
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}"

    return rule


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


_MODEL_RULES: dict[str, Rule] = {
    "depth": _positive,
    "depth_alpha": _between(0.0, 1.0),
    "head_dim": lambda v: None if v >= 2 and v % 2 == 0 else f"must be even and >= 2 (rotary embeddings), got {v}",
    "kv_ratio": _positive,
    "mlp_ratio": _positive,
    "vocab_size": lambda v: None if v >= 2 else f"must be >= 2, got {v}",
    "seq_len": _positive,
}
_WIDTH_RULES: dict[str, Rule] = {"base": _positive, "calibration": _positive, "target": _positive}
_TRAIN_RULES: dict[str, Rule] = {
    "steps": _positive,
    "batch_size": _positive,
    "warmup_steps": _non_negative,
    "final_lr_ratio": _between(0.0, 1.0),
    "eval_batches": _positive,
    "data": _non_empty,
    "tokenizer": lambda v: None if v is None or v.strip() else "must not be empty",
    "device": _non_empty,
    "divergence_factor": lambda v: None if v > 1 else f"must be > 1, got {v}",
    "grad_clip": lambda v: None if v is None or v > 0 else f"must be > 0 (leave it out for no clipping), got {v}",
    "adamw_beta1": _between(0.0, 1.0),
    "adamw_beta2": _between(0.0, 1.0),
    "adamw_eps": _positive,
    "muon_momentum": _between(0.0, 1.0),
}
_NARROWING_RULES: dict[str, Rule] = {
    "shrink": lambda v: None if v == "auto" or 0 < v <= 1 else f"must be 'auto' or in (0, 1], got {v}",
    "min_points": _positive,
}
_SEED_RULES: dict[str, Rule] = {
    "per_point": _positive,
    "base": _non_negative,
    "significance": lambda v: None if 0 < v < 1 else f"must be in (0, 1), got {v}",
}
_EXECUTOR_RULES: dict[str, Rule] = {
    "cpus_per_trial": _positive,
    "gpus_per_trial": _non_negative,
    "max_concurrent": lambda v: None if v is None or v >= 1 else f"must be >= 1, got {v}",
    "max_retries": _non_negative,
    "pack": lambda v: None if v is None or 1 <= v <= 1024 else f"must be between 1 and 1024 trials, got {v}",
    "ray_address": lambda v: None if v is None or v.strip() else "must not be empty",
}


def _check_widths(widths: Widths, model: ModelShape) -> None:
    for key in ("base", "calibration", "target"):
        w = getattr(widths, key)
        if w % model.head_dim:
            raise ConfigError(f"widths.{key}: must be a multiple of model.head_dim ({model.head_dim}), got {w}")
        heads = w // model.head_dim
        if heads % model.kv_ratio:
            raise ConfigError(
                f"widths.{key}: {heads} heads ({w} / head_dim {model.head_dim}) "
                f"must be divisible by model.kv_ratio ({model.kv_ratio})"
            )
        if not float(model.mlp_ratio * w).is_integer():
            raise ConfigError(
                f"model.mlp_ratio: mlp_ratio * width must be a whole number, got "
                f"{model.mlp_ratio} * {w} (widths.{key}) = {model.mlp_ratio * w:g}"
            )

    check_width_ladder(widths)


def check_width_ladder(widths: Widths) -> None:
    """Calibration is base times a power of two, and the target is no narrower."""
    ratio = widths.calibration / widths.base
    if widths.calibration % widths.base or not _is_power_of_two(widths.calibration // widths.base):
        raise ConfigError(
            f"widths.calibration: must be widths.base ({widths.base}) times a power of two, "
            f"got {widths.calibration} (ratio {ratio:g})"
        )
    if widths.target < widths.calibration:
        raise ConfigError(f"widths.target: must be >= widths.calibration ({widths.calibration}), got {widths.target}")


def _check_narrowing(narrowing: Narrowing, search: SearchSpace) -> None:
    if narrowing.odd and narrowing.min_points % 2 == 0:
        raise ConfigError(f"narrowing.min_points: must be odd when narrowing.odd = true, got {narrowing.min_points}")
    for a in search.axes:
        if narrowing.min_points > a.points:
            raise ConfigError(
                f"narrowing.min_points: must be <= search.{a.name}.points ({a.points}), got {narrowing.min_points}"
            )


def _parse_search(table: Mapping[str, Any]) -> SearchSpace:
    _check_keys(table, SWEEPABLE, "search")
    # A hyperparameter the file does not mention keeps its default range or value.
    axes = {k: v for k, v in DEFAULT_AXES.items() if k not in table}
    fixed = {k: v for k, v in DEFAULT_FIXED.items() if k not in table}
    for name, entry in table.items():
        where = f"search.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with lo, hi and points (or value), got {_show(entry)}")
        _check_keys(entry, ("lo", "hi", "points", "value"), where)
        if "value" in entry:
            if len(entry) > 1:
                raise ConfigError(f"{where}: give either value (fixed) or lo, hi and points (swept), not both")
            v = _coerce(entry["value"], float, f"{where}.value")
            check = _non_negative if name == "weight_decay" else _positive
            if (msg := check(v)) is not None:
                raise ConfigError(f"{where}.value: {msg}")
            fixed[name] = v
            continue
        for key in ("lo", "hi", "points"):
            if key not in entry:
                raise ConfigError(f"{where}.{key}: missing")
        lo = _coerce(entry["lo"], float, f"{where}.lo")
        hi = _coerce(entry["hi"], float, f"{where}.hi")
        points = _coerce(entry["points"], int, f"{where}.points")
        if lo <= 0:
            raise ConfigError(f"{where}.lo: must be > 0 (the range is searched in log space), got {lo:g}")
        if hi <= lo:
            raise ConfigError(f"{where}.hi: must be > {where}.lo ({lo:g}), got {hi:g}; the range is empty")
        if not 2 <= points <= MAX_POINTS:
            raise ConfigError(f"{where}.points: must be in [2, {MAX_POINTS}], got {points}")
        axes[name] = Axis(name, lo, hi, points)
    if not axes:
        raise ConfigError("search: nothing to sweep; give at least one hyperparameter lo, hi and points")
    if math.prod(a.points for a in axes.values()) > MAX_LEVEL_TRIALS:
        grid = " x ".join(str(a.points) for a in axes.values())
        raise ConfigError(f"search: a {grid} grid at level 0 is more than {MAX_LEVEL_TRIALS} trials; use fewer points")
    order = SWEEPABLE.index
    return SearchSpace(
        axes=tuple(sorted(axes.values(), key=lambda a: order(a.name))),
        fixed=tuple(sorted(fixed.items(), key=lambda kv: order(kv[0]))),
    )


# --------------------------------------------------------------------------- generic parsing


def _build(cls: type, table: Mapping[str, Any], where: str, rules: Mapping[str, Rule]) -> Any:
    """Instantiate dataclass `cls` from a TOML table, type-checking every field."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _check_keys(table, names, where)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in table:
            values[f.name] = _coerce(table[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            raise ConfigError(f"{where}.{f.name}: missing")
    for name, rule in rules.items():
        if (msg := rule(values[name])) is not None:
            raise ConfigError(f"{where}.{name}: {msg}")
    try:
        return cls(**values)
    except ConfigError as e:  # the dataclass's own checks, which do not know the section
        raise ConfigError(f"{where}: {e}") from None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a type annotation; no silent conversions except int -> float."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[0]):
            return value
        raise ConfigError(
            f"{where}: must be one of {', '.join(map(repr, choices))}, got {_show(value)}"
            f"{_did_you_mean(value, choices) if isinstance(value, str) else ''}"
        )
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        wanted = " or ".join(_describe(o) for o in options if o is not type(None))
        raise ConfigError(f"{where}: must be {wanted}, got {_show(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:  # TOML's own limit; tomllib reads any size
                raise ConfigError(f"{where}: must fit in 64 bits, got {value}")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number, got {value}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"no TOML coercion for {tp!r} ({where})")
    raise ConfigError(f"{where}: must be {_describe(tp)}, got {_show(value)}")


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _table(data: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
    if key not in data:
        if required:
            raise ConfigError(f"{key}: missing section [{key}]")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table [{key}], got {_show(value)}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: typing.Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}: unknown key{_did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})")


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d
