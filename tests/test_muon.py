import pytest
import torch

from telescope.optim.groups import build_optimizers
from telescope.optim.muon import Muon, zeropower_via_newtonschulz5
from telescope.proxy.model import build_model
from telescope.spec import ModelShape

SHAPES = [(32, 32)] * 3 + [(96, 32)] * 2 + [(32, 96)] * 2 + [(17, 5)]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", ["match_rms_adamw", "original"])
def test_updates_match_torch_muon_over_several_steps(nesterov, adjust_lr_fn):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) * 0.1 for s in SHAPES]
    ours = [p.clone().requires_grad_() for p in start]
    ref = [p.clone().requires_grad_() for p in start]
    kwargs = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    opt, ref_opt = Muon(ours, **kwargs), torch.optim.Muon(ref, **kwargs)
    for _ in range(6):
        for a, b in zip(ours, ref):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for a, b, p0 in zip(ours, ref, start):
        moved = (b - p0).abs().max()
        assert moved > 0
        # bf16 has 8 mantissa bits: allow a 1% difference of the total update
        assert (a - b).abs().max() <= 1e-2 * moved


def test_batched_newton_schulz_equals_one_matrix_at_a_time():
    g = torch.randn(4, 24, 64, generator=torch.Generator().manual_seed(1))
    batched = zeropower_via_newtonschulz5(g)
    for i in range(4):
        single = zeropower_via_newtonschulz5(g[i])
        assert torch.allclose(batched[i].float(), single.float(), atol=1e-2)
    # near-orthogonal: singular values in the NS band around 1
    s = torch.linalg.svdvals(batched[0].float())
    assert s.min() > 0.5 and s.max() < 1.5


def test_proxy_hidden_matrices_go_to_muon_and_the_rest_to_adamw():
    model = build_model(ModelShape(depth=1, head_dim=16), 32, 32, "paper")
    opts = build_optimizers(model, "paper", 0.01, 0.1, 32, 32).optimizers
    muon, adamw = opts
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    assert {g["role"] for g in muon.param_groups} == {"hidden"}
    assert {g["role"] for g in adamw.param_groups} == {"embedding", "output", "vector"}
    assert muon.defaults["adjust_lr_fn"] == "match_rms_adamw" and muon.defaults["ns_steps"] == 5
