import pytest
import torch
from torch import nn

from telescope.cost import param_counts
from telescope.errors import ConfigError
from telescope.optim.groups import build_optimizers
from telescope.proxy.model import build_model
from telescope.roles import PROXY_RULES, NameRule, classify, roles_of
from telescope.spec import ModelShape


def make(width=64, base=32, table="paper", **shape):
    return build_model(ModelShape(head_dim=16, **shape), width, base, table, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [{}, {"kv_ratio": 2}, {"tied_embeddings": True}, {"depth": 3, "mlp_ratio": 2.0}])
def test_param_count_matches_cost_model(shape):
    model = make(**shape)
    assert sum(p.numel() for p in model.parameters()) == param_counts(model.shape, 64).total


def test_heads_grow_with_width_and_kv_heads_are_grouped():
    model = make(width=128, kv_ratio=2)
    attn = model.blocks[0].attn
    assert attn.n_head == 8 and attn.n_kv_head == 4
    assert attn.k.weight.shape == (64, 128)
    logits = model(torch.randint(0, 256, (2, 20)))
    assert logits.shape == (2, 20, 256)


def test_attention_is_causal():
    model = make(table="sp")  # sp: non-zero logits at init
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)
    assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:])


def test_init_follows_the_table():
    model = make(width=128, base=32)
    assert torch.count_nonzero(model.lm_head.weight) == 0  # muP output: zero init
    assert model.lm_head.multiplier == pytest.approx(32 / 128)
    q, down = model.blocks[0].attn.q.weight, model.blocks[0].mlp.down.weight
    assert q.std().item() == pytest.approx(128**-0.5, rel=0.05)
    assert down.std().item() == pytest.approx(512**-0.5, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert torch.all(model.norm.weight == 1) and torch.all(model.blocks[0].attn.q_norm.weight == 1)
    sp = make(width=128, base=32, table="sp")
    assert sp.lm_head.multiplier == 1.0
    assert sp.lm_head.weight.std().item() == pytest.approx(128**-0.5, rel=0.05)


def test_output_multiplier_is_inside_the_model():
    model = make(width=128, base=32, table="sp")
    model.lm_head.multiplier = 0.25
    x = torch.randint(0, 256, (1, 8))
    scaled = model(x)
    model.lm_head.multiplier = 1.0
    assert torch.allclose(scaled, model(x) * 0.25, atol=1e-6)


def test_tied_embeddings_share_one_parameter():
    model = make(tied_embeddings=True)
    assert model.lm_head.weight is model.embed.weight
    assert roles_of(classify(model, PROXY_RULES))["embed.weight"] == "embedding"


@pytest.mark.parametrize("width,shape,field", [(60, {}, "head_dim"), (64, {"kv_ratio": 3}, "kv_ratio")])
def test_bad_shapes_are_config_errors(width, shape, field):
    with pytest.raises(ConfigError, match=field):
        make(width=width, **shape)


def test_every_proxy_parameter_has_a_role():
    model = make(depth=2)
    roles = roles_of(classify(model, PROXY_RULES))
    assert set(roles) == {n for n, _ in model.named_parameters()}
    assert roles["blocks.1.mlp.down.weight"] == "hidden"
    assert roles["blocks.0.attn.k_norm.weight"] == "vector"
    assert roles["lm_head.weight"] == "output"


def test_unmatched_foreign_parameter_is_named():
    foreign = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(ConfigError, match="'0.weight'"):
        classify(foreign, PROXY_RULES)
    rules = (NameRule(r"0\.weight", "output"), NameRule(r".*", "vector"))
    roles = roles_of(classify(foreign, rules))
    assert roles == {"0.weight": "output", "0.bias": "vector", "1.weight": "vector", "1.bias": "vector"}


def test_muon_refuses_non_matrices():
    foreign = nn.Sequential(nn.Linear(4, 4))
    rules = (NameRule(r"0\.weight", "output"), NameRule(r".*", "hidden"))  # the bias would go to Muon
    with pytest.raises(ConfigError, match="'0.bias' has 1 dims"):
        build_optimizers(foreign, "paper", 0.01, 0.0, 4, 4, rules=rules)
