"""A Hugging Face config.json as a family of proxies: the same model at any width.

The width fields of each `model_type` (the one table of them, `WIDTH_FIELDS`) are
replaced per width: hidden size = width; query heads = width / head dim, the config's
head dim kept; KV heads scaled in the same ratio (at least 1); intermediate and expert
sizes in proportion to the width. Everything else (depth, vocabulary, norms, tying,
rope, activation) stays as the config says. The model is built with
`transformers.AutoModelForCausalLM.from_config`, never downloaded.

The reading and scaling of the JSON needs neither torch nor transformers, so a sweep
config is checked without them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telescope.errors import ConfigError

WHERE = "model.hf_config"


@dataclass(frozen=True)
class WidthFields:
    """The config fields that change with the width, for one model_type."""

    hidden: str  # = width
    heads: str  # = width / head dim
    kv_heads: str | None = None  # scaled with the query heads, at least 1
    head_dim: str | None = None  # kept; when absent (or null) the head dim is hidden / heads
    proportional: tuple[str, ...] = ()  # scaled by width / hidden (left alone when null)


_LLAMA_LIKE = WidthFields(
    "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", ("intermediate_size",)
)

WIDTH_FIELDS: dict[str, WidthFields] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi": _LLAMA_LIKE,
    "qwen2_moe": WidthFields(
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"),
    ),
    "qwen3_moe": WidthFields(
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        ("intermediate_size", "moe_intermediate_size"),
    ),
    "gpt2": WidthFields("n_embd", "n_head", proportional=("n_inner",)),
    "gpt_neox": WidthFields("hidden_size", "num_attention_heads", proportional=("intermediate_size",)),
    "opt": WidthFields("hidden_size", "num_attention_heads", proportional=("ffn_dim", "word_embed_proj_dim")),
}

# Written by save_pretrained, not part of the architecture.
_BOOKKEEPING = ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures")
_WIDTH_LIKE = ("hidden", "embd", "heads", "head", "inner", "intermediate", "ffn", "dim")


def config_file(path: str | Path) -> Path:
    """The config.json `path` names (itself, or the one in the folder)."""
    p = Path(path).expanduser()
    return p / "config.json" if p.is_dir() else p


def canonical_path(path: str | Path) -> str:
    """The one spelling of the config.json `path` names: absolute, symlinks resolved, so
    `./x/config.json`, `x/` and a link to it are the same sweep's model."""
    return str(config_file(path).resolve())


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object of a config.json; ConfigError (one line) when missing or not JSON."""
    file = config_file(path)
    if not file.is_file():
        raise ConfigError(f"{WHERE}: no such file {str(file)!r}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{WHERE}: {str(file)!r} is not JSON: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{WHERE}: {str(file)!r} is not a JSON object")
    if not isinstance(data.get("model_type"), str):
        raise ConfigError(f"{WHERE}: {str(file)!r} has no model_type")
    return data


def width_fields(config: dict[str, Any]) -> WidthFields:
    """The table's row for the config's model_type; ConfigError naming what could not be mapped."""
    model_type = config["model_type"]
    fields = WIDTH_FIELDS.get(model_type)
    if fields is None:
        guesses = sorted(
            k
            for k, v in config.items()
            if isinstance(v, int) and not isinstance(v, bool) and any(w in k for w in _WIDTH_LIKE)
        )
        raise ConfigError(
            f"{WHERE}: model_type {model_type!r} has no width table, so its width fields "
            f"({', '.join(guesses) or 'none recognised'}) cannot be mapped; name your model with "
            '[model] factory = "package.module:function" (width -> model) instead'
        )
    for name in (fields.hidden, fields.heads):
        if not _positive_int(config.get(name)):
            raise ConfigError(
                f"{WHERE}: {model_type} config has no positive integer {name!r}, so its width cannot be mapped"
            )
    return fields


def head_dim(config: dict[str, Any]) -> int:
    fields = width_fields(config)
    explicit = config.get(fields.head_dim) if fields.head_dim else None
    return int(explicit) if _positive_int(explicit) else config[fields.hidden] // config[fields.heads]


def at_width(config: dict[str, Any], width: int) -> dict[str, Any]:
    """The config with its width fields set for `width` (see the module docstring)."""
    fields = width_fields(config)
    hidden, heads, hd = config[fields.hidden], config[fields.heads], head_dim(config)
    if width % hd:
        raise ConfigError(f"{WHERE}: width {width} is not a multiple of the config's head dim {hd}")
    scaled = dict(config)
    scaled[fields.hidden] = width
    scaled[fields.heads] = width // hd
    if fields.kv_heads and _positive_int(config.get(fields.kv_heads)):
        kv = max(1, round(config[fields.kv_heads] * (width // hd) / heads))
        if (width // hd) % kv:
            raise ConfigError(
                f"{WHERE}: at width {width}, {width // hd} query heads are not a multiple of {kv} KV heads "
                f"(the config's {heads}:{config[fields.kv_heads]})"
            )
        scaled[fields.kv_heads] = kv
    for name in fields.proportional:
        if _positive_int(config.get(name)):
            scaled[name] = max(1, round(config[name] * width / hidden))
    return scaled


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The config without its width fields: what every proxy and the target share. The
    proportions that the width fields keep (head dim, query heads per KV head, each
    proportional size per unit of width) stand in for them."""
    fields = width_fields(config)
    hidden, heads = config[fields.hidden], config[fields.heads]
    width_keys = {fields.hidden, fields.heads, fields.kv_heads, fields.head_dim, *fields.proportional}
    arch = {k: v for k, v in config.items() if k not in width_keys and k not in _BOOKKEEPING}
    arch["head_dim"] = head_dim(config)
    if fields.kv_heads and _positive_int(config.get(fields.kv_heads)):
        arch["queries_per_kv_head"] = heads / config[fields.kv_heads]
    for name in fields.proportional:
        if _positive_int(config.get(name)):
            arch[f"{name}_per_width"] = config[name] / hidden
    return arch


def architecture_hash(config: dict[str, Any]) -> str:
    text = json.dumps(architecture(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(path: str | Path, width: int, expected_hash: str | None = None, device: str | None = None) -> Any:
    """`AutoModelForCausalLM.from_config` of the config at `width`, float32, on `device`
    ("meta" builds without memory). `expected_hash`: refuse a config whose architecture
    changed since the sweep named it."""
    config = read_config(path)
    if expected_hash is not None and architecture_hash(config) != expected_hash:
        raise ConfigError(
            f"{WHERE}: {str(config_file(path))!r} changed since the sweep was started (another architecture)"
        )
    transformers = require_transformers()
    import torch

    scaled = at_width(config, width)
    model_type = scaled.pop("model_type")
    for key in _BOOKKEEPING:
        scaled.pop(key, None)
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **scaled)
    except ValueError as e:
        raise ConfigError(
            f"{WHERE}: transformers cannot read model_type {model_type!r}: {' '.join(str(e).split())[:200]}"
        ) from None
    with torch.device(device or "cpu"):
        return transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{WHERE}: needs transformers, which is not installed: pip install 'telescope[hf]'") from None
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
