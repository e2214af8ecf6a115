"""The `[model]` fields that name the user's own model (factory, hf_config, rules, check),
and `[depths]`: parsed and checked for telescope.config, which keeps the built-in proxy's
shape. Plain data, no torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from telescope.errors import ConfigError
from telescope.models import FACTORY_SPEC, ModelSource
from telescope.parametrization import DEFAULT_DEPTH_ALPHA
from telescope.spec import ModelShape


def _config():  # telescope.config imports this module: its helpers are reached at call time
    import telescope.config

    return telescope.config


@dataclass(frozen=True)
class Depths:
    """`[depths]`: sweep shallow proxies of `proxy` blocks and export for `target` blocks
    (docs/design.md §8); it takes the place of `[model] depth`."""

    proxy: int
    target: int


SOURCE_KEYS = ("factory", "hf_config", "hf_config_hash", "rules", "check")
# What the built-in proxy's shape says that a user's model decides itself.
_PROXY_ONLY = ("depth", "head_dim", "kv_ratio", "mlp_ratio", "tied_embeddings")


def with_model(data: Mapping[str, Any], factory: str | None, rules: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """A config document (TOML's dict) with `--model SPEC` (replacing the config's model:
    its factory or hf_config, and the built-in proxy's shape) and `--rules FILE` (replacing
    its rules) applied."""
    data = dict(data)
    model = dict(_config()._table(data, "model"))
    if factory is not None:
        model = {k: v for k, v in model.items() if k not in (*_PROXY_ONLY, "hf_config", "hf_config_hash")}
        model["factory"] = factory
    if rules:
        model["rules"] = [list(pair) for pair in rules]
    data["model"] = model
    return data


def parse_source(table: Mapping[str, Any]) -> ModelSource:
    factory = _config()._coerce(table.get("factory"), str | None, "model.factory")
    hf_config = _config()._coerce(table.get("hf_config"), str | None, "model.hf_config")
    check = _config()._coerce(table.get("check", "coord"), Literal["coord", "none"], "model.check")
    if factory is not None and hf_config is not None:
        raise ConfigError("model.factory: give either factory or hf_config, not both")
    if factory is not None and not FACTORY_SPEC.fullmatch(factory):
        raise ConfigError(f"model.factory: must be of the form package.module:function, got {factory!r}")
    rules = _parse_rules(table.get("rules"))
    if factory is None and hf_config is None:
        extra = [k for k in ("hf_config_hash", "rules") if k in table]
        if extra:
            raise ConfigError(f"model.{extra[0]}: only for a model named by model.factory or model.hf_config")
        return ModelSource(check=check)
    digest = None
    if hf_config is not None:
        from telescope.models import hf

        digest = hf.architecture_hash(hf.read_config(hf_config))
        hf_config = hf.canonical_path(hf_config)
        stored = _config()._coerce(table.get("hf_config_hash"), str | None, "model.hf_config_hash")
        if stored is not None and stored != digest:
            raise ConfigError(
                f"model.hf_config: {hf_config!r} is not the config this sweep was started with (its architecture "
                "changed)"
            )
    return ModelSource(factory, hf_config, digest, rules, check)


# "package.module:function": how a factory is named (telescope.models.foreign loads it).


def _parse_rules(value: Any) -> tuple[tuple[str, str], ...]:
    """`rules`: a TOML/JSON file of role rules (the format of --rules) or [[pattern, role], ...]."""
    if value is None:
        return ()
    from telescope.roles import as_rules, load_rules

    if isinstance(value, str):
        try:
            return load_rules(value)
        except ConfigError as e:
            raise ConfigError(f"model.rules: {str(e).removeprefix('--rules ')}") from None
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in value
    ):
        raise ConfigError(
            f"model.rules: must be a rules file or an array of [pattern, role] pairs, got {_config()._show(value)}"
        )
    pairs = tuple((p[0], p[1]) for p in value)
    try:
        as_rules(pairs)
    except ConfigError as e:
        raise ConfigError(f"model.rules: {e}") from None
    return pairs


def user_model_shape(model: ModelShape, table: Mapping[str, Any], source: ModelSource) -> ModelShape:
    """The shape of a user's model: seq_len (and, for a factory, vocab_size) from the
    config; the rest is the model's own, so the proxy's fields are refused."""
    named = "model.factory" if source.factory is not None else "model.hf_config"
    for key in _PROXY_ONLY:
        if key in table:
            raise ConfigError(f"model.{key}: the proxies are your model ({named}), which decides its own {key}")
    if source.hf_config is None:
        return model
    from telescope.models import hf

    vocab = hf.read_config(source.hf_config).get("vocab_size")
    if not isinstance(vocab, int) or vocab < 2:
        raise ConfigError(f"model.hf_config: {source.hf_config!r} has no vocab_size")
    if "vocab_size" in table and table["vocab_size"] != vocab:
        raise ConfigError(f"model.vocab_size: {table['vocab_size']} differs from the hf_config's vocab_size {vocab}")
    return dataclasses.replace(model, vocab_size=vocab)


def check_user_widths(widths: Any, source: ModelSource) -> None:
    """The width ladder, and for a Hugging Face config its head dim dividing every level's width and the target."""
    _config().check_width_ladder(widths)
    if source.hf_config is None:
        return
    from telescope.models import hf

    config = hf.read_config(source.hf_config)
    level_widths = [widths.base << k for k in range((widths.calibration // widths.base).bit_length())]
    for width in [*level_widths, widths.target]:
        hf.at_width(config, width)


def model_table(model: ModelShape, source: ModelSource, shallow: bool = False) -> dict[str, Any]:
    """The `[model]` table of a config; depth_alpha only when the depth rule is on, so a
    config without it reads as it did before it existed. `shallow` (a `[depths]` section
    gives the depth): no depth, and depth_alpha always, 0 included, since there its absence
    means the default rule."""
    alpha = {"depth_alpha": model.depth_alpha} if model.depth_alpha or shallow else {}
    if source.factory is None and source.hf_config is None:  # `check` waits for a --model
        skip = ("depth_alpha", "depth") if shallow else ("depth_alpha",)
        shape = {k: v for k, v in dataclasses.asdict(model).items() if k not in skip}
        return shape | alpha | ({"check": source.check} if source.check != "coord" else {})
    table: dict[str, Any] = {"seq_len": model.seq_len, "vocab_size": model.vocab_size, **alpha}
    table |= {"factory": source.factory, "hf_config": source.hf_config, "hf_config_hash": source.hf_config_hash}
    if source.rules:
        table["rules"] = [list(pair) for pair in source.rules]
    return table | {"check": source.check}


def parse_depths(data: Mapping[str, Any], model_table: Mapping[str, Any], source: ModelSource) -> Depths | None:
    """`[depths]`: proxy and target depths, the target no shallower; it replaces model.depth."""
    if "depths" not in data:
        return None
    if source.factory is not None or source.hf_config is not None:
        named = "model.factory" if source.factory is not None else "model.hf_config"
        raise ConfigError(f"depths: the proxies are your model ({named}), which decides its own depth")
    if "depth" in model_table:
        raise ConfigError(
            "model.depth: a [depths] section gives the proxies' depth (depths.proxy); leave model.depth out"
        )
    depths = _config()._build(
        Depths,
        _config()._table(data, "depths"),
        "depths",
        {"proxy": _config()._positive, "target": _config()._positive},
    )
    if depths.target < depths.proxy:
        raise ConfigError(f"depths.target: must be >= depths.proxy ({depths.proxy}), got {depths.target}")
    return depths


def shallow_proxy(model: ModelShape, model_table: Mapping[str, Any], depths: Depths) -> ModelShape:
    """The proxies' shape under `[depths]`: the proxy depth, and the depth rule the config names
    or, when it names none, the measured default (README "Depth")."""
    alpha = model.depth_alpha if "depth_alpha" in model_table else DEFAULT_DEPTH_ALPHA
    return dataclasses.replace(model, depth=depths.proxy, depth_alpha=alpha)
