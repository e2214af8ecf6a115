import math

import pytest
import torch

from telescope.errors import ConfigError
from telescope.optim.groups import build_optimizers
from telescope.parametrization import (
    TABLES,
    check_same_fingerprint,
    fingerprint,
    get_table,
    transfer,
)
from telescope.proxy.model import build_model, parameter_roles
from telescope.spec import ModelShape

SHAPE = ModelShape(depth=1, head_dim=16)
BASE = 32
# (table, hidden optimizer, hidden LR exponent, output multiplier exponent, output init)
EXPECTED = [
    ("paper", "muon", -1.0, -1.0, "zero"),
    ("muon", "muon", -0.5, -1.0, "zero"),
    ("adamw", "adamw", -1.0, -1.0, "zero"),
    ("sp", "muon", 0.0, 0.0, "normal"),
]


@pytest.mark.parametrize("name,hidden_opt,hidden_lr_exp,out_mult_exp,out_init", EXPECTED)
@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_transfer_gives_each_role_the_table_factor(name, hidden_opt, hidden_lr_exp, out_mult_exp, out_init, m):
    eta0, lam = 0.03, 0.1
    rows = transfer(name, eta0, lam, BASE, BASE * m, parameter_roles(SHAPE, BASE * m, BASE), muon_lr_ratio=1.0)
    by_role = {}
    for row in rows:
        by_role.setdefault(row.role, []).append(row)
    assert set(by_role) == {"embedding", "hidden", "output", "vector"}
    for row in by_role["hidden"]:
        assert row.optimizer == hidden_opt
        assert row.lr == pytest.approx(eta0 * m**hidden_lr_exp)
        assert row.init_std == pytest.approx(1 / math.sqrt(row.fan_in))
        assert row.weight_decay == lam
    assert {r.fan_in for r in by_role["hidden"]} == {BASE * m, 4 * BASE * m}  # down has fan-in 4d
    (out,) = by_role["output"]
    assert out.multiplier == pytest.approx(m**out_mult_exp)
    assert out.lr == pytest.approx(eta0) and out.optimizer == "adamw"
    assert out.init == out_init
    (emb,) = by_role["embedding"]
    assert emb.lr == pytest.approx(eta0) and emb.init_std == 1.0 and emb.multiplier == 1.0
    for vec in by_role["vector"]:
        assert vec.weight_decay == 0.0 and vec.init == "ones" and vec.lr == pytest.approx(eta0)


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("m", [1, 4])
def test_optimizer_groups_match_transfer(name, m):
    """The LRs the trial really uses are the ones export prints."""
    width = BASE * m
    model = build_model(SHAPE, width, BASE, name, torch.Generator().manual_seed(0))
    opt = build_optimizers(model, name, 0.02, 0.05, width, BASE, muon_lr_ratio=2.0)
    rows = transfer(name, 0.02, 0.05, BASE, width, parameter_roles(SHAPE, width, BASE), muon_lr_ratio=2.0)
    expected = {(r.role, round(r.lr, 12), r.weight_decay) for r in rows}
    actual = {(g["role"], round(g["lr"], 12), g["weight_decay"]) for g in opt.param_groups}
    assert actual == expected
    for group in opt.param_groups:
        is_muon = get_table(name).rule(group["role"]).optimizer == "muon"
        assert all(p.ndim == 2 for p in group["params"]) or not is_muon


def test_muon_lr_ratio_scales_only_muon_groups():
    rows1 = {
        r.params: r.lr
        for r in transfer("paper", 0.02, 0.0, BASE, 64, parameter_roles(SHAPE, 64, BASE), muon_lr_ratio=1.0)
    }
    rows3 = {
        r.params: r for r in transfer("paper", 0.02, 0.0, BASE, 64, parameter_roles(SHAPE, 64, BASE), muon_lr_ratio=3.0)
    }
    for params, row in rows3.items():
        factor = 3.0 if row.optimizer == "muon" else 1.0
        assert row.lr == pytest.approx(rows1[params] * factor)


def test_unknown_table_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown parametrization 'mup'"):
        get_table("mup")


def test_fingerprint_refuses_transfer_between_tables():
    paper, muon = fingerprint("paper"), fingerprint("muon")
    assert paper["table"] == "paper" and paper["lr_adjust"] == "match_rms_adamw"
    assert paper["ns_steps"] == 5 and paper["ns_coefficients"] == [3.4445, -4.7750, 2.0315]
    assert paper["torch"] == torch.__version__
    check_same_fingerprint(paper, fingerprint("paper"))
    with pytest.raises(ConfigError, match="table"):
        check_same_fingerprint(paper, muon)
    with pytest.raises(ConfigError, match="muon_lr_ratio"):
        check_same_fingerprint(paper, fingerprint("paper", muon_lr_ratio=2.0))
    check_same_fingerprint(paper, fingerprint("paper", muon_lr_ratio=2.0), ignore=("muon_lr_ratio",))


@pytest.mark.parametrize("name", list(TABLES))
def test_every_table_suggests_a_positive_default_lr(name):
    assert 1e-4 < get_table(name).default_lr < 1.0
