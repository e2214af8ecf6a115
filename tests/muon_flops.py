"""Newton-Schulz FLOPs as torch counts them, for the cost model's tests."""

from __future__ import annotations


def muon_step_flops(config, width: int) -> float:
    """Matmul FLOPs of one optimizer step of the model a trial at `width` trains, counted by
    torch: Muon's Newton-Schulz products are the step's only matmuls."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from telescope.parametrization import get_table
    from telescope.training.train import build_trial_model

    spec = config.trial_spec(width, {"lr": 0.01, "weight_decay": 0.1}, 0)
    model, optimizers = build_trial_model(spec, get_table(spec.parametrization), torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    counter = FlopCounterMode(display=False)
    with counter:
        optimizers.step()
    return counter.get_total_flops()
