"""Initialisation per role and the output multiplier: one implementation for the proxy and
for any user model (the parameters come classified by telescope.roles).

Per role, as the table's row says, at m = width / base_width:
- embedding: normal, the table's std (constant 1.0 in the shipped tables); an
  nn.Embedding's padding row stays zero. An embedding tied to the unembedding is also the
  readout: its std is divided by sqrt(base_width) (Table.init_std).
- hidden: normal, std = 1/sqrt(fan_in), fan_in the true input size (Conv1D's first dim,
  each expert matrix's last dim).
- output: zero in the muP tables, normal 1/sqrt(fan_in) in `sp` (a tied unembedding is an
  embedding and keeps the embedding init).
- vector: biases zero; norm gains one, or zero for norms that compute x * (1 + w) (Gemma),
  whose identity is w = 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from telescope.parametrization import Table, width_multiplier
from telescope.roles import ParamRole


@torch.no_grad()
def init_parameters(
    classified: Sequence[ParamRole],
    table: Table,
    width: int,
    base_width: int,
    generator: torch.Generator | None = None,
) -> None:
    """Initialise every classified parameter in place, per its role's row of `table`."""
    m = width_multiplier(width, base_width)
    for c in classified:
        init, weight = table.rule(c.role).init, c.param
        if weight.device.type == "meta":
            continue
        if c.role == "vector" and c.name.endswith("bias"):
            weight.zero_()
        elif init.kind == "zero":
            weight.zero_()
        elif init.kind == "ones":
            weight.fill_(0.0 if any(_is_offset_norm(o) for o in c.owners) else 1.0)
        else:
            std = table.init_std(c.role, m, c.fan_in, base_width, tied_readout=bool(c.logit_modules))
            weight.normal_(0.0, std, generator=generator)
        for owner in c.owners:
            if isinstance(owner, nn.Embedding) and owner.padding_idx is not None:
                owner.weight[owner.padding_idx].zero_()


@torch.no_grad()
def _is_offset_norm(module: nn.Module) -> bool:
    """Whether a norm scales by (1 + weight), found by asking it: with its weight (and
    bias) zeroed, an ordinary norm outputs zeros, an offset norm the normalised input."""
    weight = getattr(module, "weight", None)
    if "Norm" not in type(module).__name__ or not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        return False
    saved = {name: p.detach().clone() for name, p in module.named_parameters(recurse=False)}
    try:
        for p in module.parameters(recurse=False):
            p.zero_()
        probe = torch.linspace(-1.0, 1.0, weight.numel(), dtype=weight.dtype, device=weight.device)[None]
        out = module(probe)
        return isinstance(out, torch.Tensor) and bool(out.abs().sum() > 0)
    except Exception:  # noqa: BLE001 - a module that cannot be probed this way is an ordinary norm
        return False
    finally:
        for name, p in module.named_parameters(recurse=False):
            p.copy_(saved[name])


class OutputMultiplier:
    """Forward hook scaling a module's output by `module.telescope_output_multiplier`.

    The value is a marker on the module, and the hook is registered once: applying the
    multiplier again (after `copy.deepcopy`, `torch.save` of the whole model, or by
    mistake) replaces the value instead of stacking a second hook."""

    ATTRIBUTE = "telescope_output_multiplier"

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        value = getattr(module, self.ATTRIBUTE, 1.0)
        return output if value == 1.0 else output * value


def set_output_multiplier(module: nn.Module, value: float) -> None:
    """Scale `module`'s output by `value` from now on (idempotent; see OutputMultiplier)."""
    setattr(module, OutputMultiplier.ATTRIBUTE, float(value))
    if not any(isinstance(hook, OutputMultiplier) for hook in module._forward_hooks.values()):
        module.register_forward_hook(OutputMultiplier())
