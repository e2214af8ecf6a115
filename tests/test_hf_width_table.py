"""The width-field table (telescope/models/hf.py): every mapped model_type's default
transformers config, rebuilt at two widths on the meta device, has the widths, heads and
proportional sizes the table promises; what it cannot map is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import CONFIG_MAPPING

from telescope.errors import ConfigError
from telescope.models import hf


def default_config(model_type: str) -> dict:
    config = CONFIG_MAPPING[model_type]().to_dict()
    config.pop("layer_types", None)  # recomputed for the depth below
    return (
        config | {"num_hidden_layers": 1, "n_layer": 1, "vocab_size": 256}
        if model_type == "gpt2"
        else config | {"num_hidden_layers": 1, "vocab_size": 256}
    )


@pytest.mark.parametrize("model_type", sorted(hf.WIDTH_FIELDS))
def test_each_mapped_model_type_builds_at_any_multiple_of_its_head_dim(tmp_path: Path, model_type: str) -> None:
    config = default_config(model_type)
    (tmp_path / "config.json").write_text(json.dumps(config))
    fields, head_dim = hf.width_fields(config), hf.head_dim(config)
    for width in (2 * head_dim, 4 * head_dim):
        model = hf.build(tmp_path, width, device="meta")
        built = model.config.to_dict()
        assert built[fields.hidden] == width and built[fields.heads] == width // head_dim
        if fields.kv_heads and config.get(fields.kv_heads):
            ratio = config[fields.heads] / config[fields.kv_heads]
            assert built[fields.kv_heads] == max(1, round(width // head_dim / ratio))
        for name in fields.proportional:
            if config.get(name):
                assert built[name] == max(1, round(config[name] * width / config[fields.hidden]))
        assert next(model.parameters()).device.type == "meta"
    # Twice the config's width keeps every proportion, so the architecture is the same.
    assert hf.architecture_hash(config) == hf.architecture_hash(hf.at_width(config, 2 * config[fields.hidden]))


def test_what_cannot_be_mapped_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"model_type 'bert' has no width table, so its width fields \(.*hidden_size.*\) "
        r"cannot be mapped; name your model with \[model\] factory",
    ):
        hf.width_fields({"model_type": "bert", "hidden_size": 768, "intermediate_size": 3072})
    with pytest.raises(ConfigError, match="width 48 is not a multiple of the config's head dim 32"):
        hf.at_width(default_config("llama") | {"head_dim": 32}, 48)
