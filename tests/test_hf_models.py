"""Real `transformers` models, built from config objects, through telescope's one muP core:
roles, init by the true fan-in, Muon per expert, 20 steps that learn, coord checks that
pass (tied unembedding included), an idempotent logit multiplier, optimizers that
checkpoint and take an LR scheduler, and exports that must match the model."""

from __future__ import annotations

import copy
import io
import json
import math

import hf_models
import pytest
import torch
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.coord.study import CoordCheckSettings, coord_check
from telescope.data import load_data
from telescope.errors import TelescopeError
from telescope.export import export_sweep
from telescope.models.foreign import build_foreign_optimizers, classify, optimizers_from_export, parametrize
from telescope.optim.muon import Muon
from telescope.spec import ModelShape
from telescope.storage.database import Database
from telescope.training.train import loss_fn

MODELS = ("llama", "gpt2", "qwen3", "mixtral")
WIDTH, BASE = 64, 32


def build(name: str, width: int = WIDTH, table: str = "paper") -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(hf_models, name)(width)
    parametrize(model, table, width, BASE, generator=torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_in_exactly_one_group(name: str) -> None:
    model = build(name)
    optimizers = build_foreign_optimizers(model, "paper", 0.02, 0.1, WIDTH, BASE)
    grouped = [id(p) for group in optimizers.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MODELS)
def test_hidden_init_follows_the_true_fan_in(name: str) -> None:
    model = build(name, width=128)
    for c in classify(model):
        if c.role != "hidden":
            continue
        matrices = c.param.detach().reshape(-1, *c.shape[-2:])  # an expert bank: each expert alone
        for matrix in matrices:
            assert matrix.std().item() == pytest.approx(1 / math.sqrt(c.fan_in), rel=0.1), (c.name, c.fan_in)


def test_gpt2_conv1d_fan_in_is_its_first_dim() -> None:
    model = build("gpt2", width=128)
    mlp = model.transformer.h[0].mlp
    assert tuple(mlp.c_fc.weight.shape) == (128, 512) and tuple(mlp.c_proj.weight.shape) == (512, 128)
    assert (mlp.c_fc.weight.std() / mlp.c_proj.weight.std()).item() == pytest.approx(2.0, rel=0.05)


def test_mixtral_experts_are_hidden_banks_and_the_router_a_hidden_matrix() -> None:
    roles = {c.name: (c.role, c.fan_in) for c in classify(build("mixtral"))}
    assert roles["model.layers.0.mlp.experts.gate_up_proj"] == ("hidden", WIDTH)
    assert roles["model.layers.0.mlp.experts.down_proj"] == ("hidden", 2 * WIDTH)
    assert roles["model.layers.0.mlp.gate.weight"] == ("hidden", WIDTH)


def test_muon_updates_each_expert_as_its_own_matrix() -> None:
    torch.manual_seed(0)
    bank = torch.nn.Parameter(torch.randn(4, 48, 32))
    experts = [torch.nn.Parameter(bank.detach()[e].clone()) for e in range(4)]
    grad = torch.randn(4, 48, 32)
    bank.grad = grad.clone()
    for e, p in enumerate(experts):
        p.grad = grad[e].clone()
    settings = dict(lr=0.02, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    Muon([bank], **settings).step()
    Muon(experts, **settings).step()
    assert torch.equal(bank.detach(), torch.stack([p.detach() for p in experts]))


@pytest.mark.parametrize("name", MODELS)
def test_twenty_steps_learn(name: str) -> None:
    model = build(name)
    optimizers = build_foreign_optimizers(model, "paper", 0.03, 0.0, WIDTH, BASE)
    data = load_data("stdlib")
    losses = []
    for step in range(20):
        inputs, targets = data.train_batch(step, 8, 64, seed=0)
        loss = loss_fn(model, inputs, targets)  # the model returns a ModelOutput: its .logits
        loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), abs=0.25)  # a zero (or, tied, small) readout: near uniform
    assert losses[-1] < losses[0] - 2.0


@pytest.mark.parametrize("name", MODELS)
def test_coord_check_passes(name: str) -> None:
    settings = CoordCheckSettings(
        widths=(32, 64, 128, 256), model_factory=f"hf_models:{name}", shape=ModelShape(depth=2, head_dim=16)
    )
    result = coord_check(settings)
    assert result.passed, [(layer.layer, round(layer.slope, 2)) for layer in result.layers if not layer.passed]


def test_coord_check_passes_for_the_proxy_with_tied_embeddings() -> None:
    result = coord_check(
        CoordCheckSettings(widths=(32, 64, 128, 256), shape=ModelShape(depth=2, head_dim=16, tied_embeddings=True))
    )
    assert result.passed, [(layer.layer, round(layer.slope, 2)) for layer in result.layers if not layer.passed]


def test_the_logit_multiplier_never_stacks() -> None:
    model = build("llama")
    model.lm_head.weight.data.normal_()  # nonzero logits to compare
    idx = torch.randint(0, 256, (1, 8))
    expected = model(idx).logits
    for copy_of in (copy.deepcopy, lambda m: _saved_and_loaded(m)):
        twin = copy_of(model)  # carries the hook and its value
        parametrize(twin, "paper", WIDTH, BASE)  # again: re-initialises, so put the weights back
        twin.load_state_dict(model.state_dict())
        assert torch.allclose(twin(idx).logits, expected, atol=1e-5), copy_of


def _saved_and_loaded(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_optimizers_checkpoint_and_take_an_lr_scheduler() -> None:
    data = load_data("stdlib")

    def train(model, optimizers, steps):
        for step in steps:
            inputs, targets = data.train_batch(step, 4, 32, seed=0)
            loss_fn(model, inputs, targets).backward()
            optimizers.step()
            optimizers.zero_grad()

    model = build("mixtral")
    optimizers = build_foreign_optimizers(model, "paper", 0.02, 0.1, WIDTH, BASE)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizers, lambda step: 1.0 / (1 + step))
    train(model, optimizers, range(3))
    scheduler.step()
    assert [g["lr"] for g in optimizers.param_groups] == pytest.approx(
        [g["peak_lr"] / 2 for g in optimizers.param_groups]
    )
    checkpoint = copy.deepcopy({"model": model.state_dict(), "optimizers": optimizers.state_dict()})
    train(model, optimizers, range(3, 5))

    resumed = build("mixtral")
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizers = build_foreign_optimizers(resumed, "paper", 0.02, 0.1, WIDTH, BASE)
    resumed_optimizers.load_state_dict(checkpoint["optimizers"])
    train(resumed, resumed_optimizers, range(3, 5))
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.fixture(scope="module")
def export(smallest_sweep_db: str) -> dict:
    """A real export: table paper, target width 64, base width 16."""
    with Database(smallest_sweep_db, create=False) as db:
        return export_sweep(db, "micro")


def test_parametrize_reads_the_export_and_the_optimizers_check_it(export: dict) -> None:
    model = hf_models.llama(64)
    parametrize(model, export)
    _, rows = optimizers_from_export(model, export)
    assert {r["role"] for r in rows} == {"embedding", "hidden", "output", "vector"}
    by_role = {g["role"]: g["lr"] for g in export["groups"]}
    assert all(r["lr"] == pytest.approx(by_role[r["role"]]) for r in rows)

    other = hf_models.llama(64)
    parametrize(other, "sp", 64, 16)  # by hand, with another table
    with pytest.raises(TelescopeError, match="parametrized with .*'sp'.* but the export is"):
        optimizers_from_export(other, export)
    with pytest.raises(TelescopeError, match="model width 128 .* differs from the width 64"):
        parametrize(hf_models.llama(128), export)
    with pytest.raises(TelescopeError, match="width 32 differs from the export's target width 64"):
        parametrize(hf_models.llama(64), export, width=32)


def test_offset_norms_start_at_zero() -> None:
    from transformers import GemmaConfig, GemmaForCausalLM

    model = GemmaForCausalLM(
        GemmaConfig(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
        )
    )
    parametrize(model, "paper", 64, 32)
    norms = {n: p for n, p in model.named_parameters() if n.endswith("norm.weight")}
    assert norms and all(torch.count_nonzero(p) == 0 for p in norms.values())  # Gemma computes x * (1 + w)
    llama = build("llama")
    assert torch.equal(llama.model.norm.weight, torch.ones_like(llama.model.norm.weight))


def test_cli_model_with_model_output_and_a_rules_file(tmp_path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["coord-check", "--model", "hf_models:llama", "--widths", "32,64,128", "--head-dim", "16"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["coord-check", "--model", "foreign_models:decoder_lm", "--widths", "32,64"])
    assert out.exit_code == 2 and "no unembedding found" in out.stderr
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\npattern = 'decoder\\.weight'\nrole = \"output\"\n")
    out = runner.invoke(
        app, ["coord-check", "--model", "foreign_models:decoder_lm", "--widths", "32,64,128", "--rules", str(rules)]
    )
    assert out.exit_code == 0, out.output
    rules.write_text("[[rule]]\npattern = 'decoder\\.weight'\nrole = \"head\"\n")
    out = runner.invoke(app, ["coord-check", "--model", "foreign_models:decoder_lm", "--rules", str(rules)])
    assert out.exit_code == 2 and "has role 'head'" in out.stderr


def test_coord_check_of_a_users_model_judges_each_layer_within_the_bounds_the_sweep_uses() -> None:
    """`coord-check --model` and the sweep's check before training judge alike: a hidden
    layer under `paper` may shrink by design (1/m LR), an embedding may not."""
    args = ["coord-check", "--model", "hf_models:llama", "--widths", "32,64,128", "--head-dim", "16", "--json"]
    rows = {row["layer"]: row for row in json.loads(CliRunner().invoke(app, args).stdout)["layers"]}
    down = next(row for layer, row in rows.items() if layer.endswith("down_proj"))
    assert (down["passes"], rows["model.embed_tokens"]["passes"]) == ("-0.75..+0.25", "-0.25..+0.25")
    for row in rows.values():
        low, high = (float(x) for x in row["passes"].split(".."))
        assert row["verdict"] == ("PASS" if low <= row["slope"] <= high else "FAIL")
    muon = {row["layer"]: row for row in json.loads(CliRunner().invoke(app, [*args, "-p", "muon"]).stdout)["layers"]}
    assert next(row for layer, row in muon.items() if layer.endswith("down_proj"))["passes"] == "-0.25..+0.25"
