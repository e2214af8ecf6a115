"""Telescope's parametrization on a model that is not our proxy: roles, init, the output
multiplier, and optimizers whose groups carry exactly the exported values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from telescope.errors import ConfigError, TelescopeError
from telescope.export import export_sweep, render
from telescope.models.foreign import (
    FOREIGN_RULES,
    apply_output_multiplier,
    classification_report,
    classify_foreign,
    load_factory,
    make_model,
    optimizers_from_export,
    parametrize,
)
from telescope.proxy.model import build_model
from telescope.spec import ModelShape
from telescope.storage.database import Database


@pytest.fixture(scope="module")
def export(smallest_sweep_db: str) -> dict:
    """The export of a real (micro) sweep: target width 64, base width 16, table `paper`."""
    with Database(smallest_sweep_db, create=False) as db:
        return export_sweep(db, "micro")


class CausalLM(nn.Module):
    """A plain torch LM: nn.TransformerEncoder layers under a causal mask, a LayerNorm, a head."""

    def __init__(self, width: int, vocab: int = 256, depth: int = 2, tied: bool = False, head: str = "lm_head"):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(
            width, nhead=width // 16, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        setattr(self, head, nn.Linear(width, vocab, bias=False))
        self.head_name = head
        if tied:
            getattr(self, head).weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(idx.size(1))
        x = self.layers(self.tok(idx), mask=mask, is_causal=True)
        return getattr(self, self.head_name)(self.norm(x))


def test_roles_of_a_plain_torch_lm() -> None:
    model = CausalLM(64)
    roles = classify_foreign(model)
    assert set(roles) == {name for name, _ in model.named_parameters()}
    assert roles["tok.weight"] == "embedding"
    assert roles["lm_head.weight"] == "output"
    assert roles["layers.layers.0.self_attn.in_proj_weight"] == "hidden"
    assert roles["layers.layers.1.linear2.weight"] == "hidden"
    for name in ("layers.layers.0.self_attn.in_proj_bias", "layers.layers.0.norm1.weight", "norm.bias"):
        assert roles[name] == "vector"
    report = classification_report(model)
    assert [r["parameter"] for r in report] == list(roles)
    assert {r["role"] for r in report} == {"embedding", "hidden", "output", "vector"}


def test_tied_unembedding_is_classified_once_as_the_embedding() -> None:
    model = CausalLM(64, tied=True)
    roles = classify_foreign(model)
    assert roles["tok.weight"] == "embedding" and "lm_head.weight" not in roles
    (row,) = [r for r in classification_report(model) if r["parameter"] == "tok.weight"]
    assert row["tied_with"] == "lm_head.weight"


def test_a_parameter_no_rule_covers_is_named() -> None:
    model = CausalLM(32)
    model.conv = nn.Conv1d(32, 32, 3)  # a 3-D kernel: no default rule
    with pytest.raises(ConfigError, match=r"'conv\.weight'.*matches no role rule") as err:
        classify_foreign(model)
    assert "\n" not in str(err.value)
    rules = [(r"conv\.weight", "hidden"), *FOREIGN_RULES]
    assert classify_foreign(model, rules)["conv.weight"] == "hidden"


def test_no_unembedding_is_an_error_until_a_rule_names_it() -> None:
    model = CausalLM(32, head="decoder")
    with pytest.raises(ConfigError, match="no unembedding found: name it with a rule"):
        classify_foreign(model)
    assert classify_foreign(model, [(r"decoder\.weight", "output"), *FOREIGN_RULES])["decoder.weight"] == "output"
    with pytest.raises(ConfigError, match="role 'head'"):
        classify_foreign(model, [(r"decoder\.weight", "head")])


def _export_values(export: dict) -> dict[str, tuple[float, float]]:
    return {g["role"]: (g["lr"], g["weight_decay"]) for g in export["groups"]}


def _assert_groups_carry_export(model: nn.Module, optimizers, rows, export: dict) -> None:
    expected = _export_values(export)
    groups = optimizers.param_groups
    assert {g["role"] for g in groups} == set(expected) == {"embedding", "hidden", "output", "vector"}
    for g in groups:
        assert g["lr"] == g["peak_lr"] == pytest.approx(expected[g["role"]][0], rel=1e-12)
        assert g["weight_decay"] == pytest.approx(expected[g["role"]][1], rel=1e-12)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert len(rows) == len(grouped)
    muon = [g for g in optimizers.optimizers if not isinstance(g, torch.optim.AdamW)]
    assert [g["role"] for opt in muon for g in opt.param_groups] == ["hidden"]
    # the transfer did something: hidden LR is eta0 / m at m = 64 / 16
    assert expected["hidden"][0] == pytest.approx(export["base"]["lr"] / 4)


def test_optimizer_groups_equal_the_export_on_a_foreign_model(export: dict, tmp_path: Path) -> None:
    files = {}
    for fmt in ("json", "yaml", "toml"):
        files[fmt] = tmp_path / f"export.{fmt}"
        files[fmt].write_text(render(export, fmt))
    for source in (export, *files.values()):
        model = CausalLM(export["target_width"])
        optimizers, rows = optimizers_from_export(model, source)
        _assert_groups_carry_export(model, optimizers, rows, export)
    hidden = [r for r in rows if r["parameter"] == "layers.layers.0.linear1.weight"][0]
    assert hidden["role"] == "hidden" and hidden["optimizer"] == "muon"


def test_optimizer_groups_equal_the_export_on_our_proxy(export: dict) -> None:
    model = build_model(ModelShape(**export["model"]), export["target_width"], export["base_width"], "paper")
    optimizers, rows = optimizers_from_export(model, export)
    _assert_groups_carry_export(model, optimizers, rows, export)


def test_exported_values_train_the_foreign_model(export: dict) -> None:
    torch.manual_seed(0)
    model = CausalLM(export["target_width"], depth=1)
    parametrize(model, export["parametrization"], export["target_width"], export["base_width"])
    optimizers, _ = optimizers_from_export(model, export)
    tokens = torch.arange(33).remainder(7).repeat(4, 1)  # a periodic sequence it can learn
    losses = []
    for _ in range(8):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), abs=1e-3)  # zero-initialised unembedding
    assert losses[-1] < losses[0] - 0.5


def test_width_and_parametrization_mismatches_are_refused(export: dict) -> None:
    with pytest.raises(TelescopeError, match="model width 32 .* target width 64"):
        optimizers_from_export(CausalLM(32), export)
    other = json.loads(json.dumps(export)) | {"parametrization": "muon"}
    with pytest.raises(TelescopeError, match="cannot transfer between different parametrizations"):
        optimizers_from_export(CausalLM(64), other)
    with pytest.raises(TelescopeError, match="not a telescope export: missing groups"):
        optimizers_from_export(CausalLM(64), {k: v for k, v in export.items() if k != "groups"})


@torch.no_grad()
def test_parametrize_sets_init_std_and_scales_the_logits() -> None:
    torch.manual_seed(0)
    width, base = 128, 32
    model = CausalLM(width)
    roles = parametrize(model, "paper", width, base, generator=torch.Generator().manual_seed(1))
    params = dict(model.named_parameters())
    assert params["tok.weight"].std().item() == pytest.approx(1.0, rel=0.02)
    linear1 = params["layers.layers.0.linear1.weight"]  # fan_in = width
    assert linear1.std().item() == pytest.approx(1 / math.sqrt(width), rel=0.05)
    assert params["layers.layers.0.linear2.weight"].std().item() == pytest.approx(1 / math.sqrt(4 * width), rel=0.05)
    assert torch.all(params["lm_head.weight"] == 0)
    assert torch.all(params["norm.weight"] == 1) and torch.all(params["norm.bias"] == 0)
    assert torch.all(params["layers.layers.0.self_attn.in_proj_bias"] == 0)
    assert roles["lm_head.weight"] == "output"

    idx = torch.randint(0, 256, (2, 8))
    model.lm_head.weight.normal_()  # as after training: nonzero logits
    scaled = model(idx)
    assert apply_output_multiplier(model, "paper", base, base) == 1.0  # m = 1: no multiplier
    raw = model(idx)
    assert raw.abs().mean() > 0.1
    torch.testing.assert_close(scaled, raw * base / width)
    parametrize(model, "paper", width, base)
    parametrize(model, "paper", width, base)  # again: replaces, does not stack
    model.lm_head.weight.normal_()
    raw_after = model(idx) * width / base
    apply_output_multiplier(model, "sp", width, base)  # sp has no output multiplier
    torch.testing.assert_close(model(idx), raw_after)


def test_bad_factory_specs_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "broken_lm.py").write_text("import torch\nraise RuntimeError('boom\\nsecond line')\n")
    (tmp_path / "good_lm.py").write_text(
        "from torch import nn\nNOT_CALLABLE = 3\n"
        "def make(width):\n    return nn.Linear(width, width)\n"
        "def wrong(width):\n    return 'a string'\n"
    )
    monkeypatch.chdir(tmp_path)
    cases = {
        "no_colon": "is not of the form package.module:factory",
        "a:b:c": "is not of the form",
        "no_such_module_xyz:make": "no module named 'no_such_module_xyz'",
        "broken_lm:make": "importing 'broken_lm' failed: RuntimeError: boom second line",
        "good_lm:missing": "has no attribute 'missing'",
        "good_lm:NOT_CALLABLE": "is a int, not callable",
    }
    for spec, message in cases.items():
        with pytest.raises(TelescopeError, match=message) as err:
            load_factory(spec)
        assert "\n" not in str(err.value)
    assert isinstance(make_model(load_factory("good_lm:make"), 8), nn.Linear)
    with pytest.raises(TelescopeError, match="returned a str, not a torch.nn.Module"):
        make_model(load_factory("good_lm:wrong"), 8)
