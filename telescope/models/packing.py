"""Whether the user's model can be packed like the built-in proxy (telescope.training.packed):
k models' parameters stacked and run through one template with `torch.func.functional_call`
under `vmap`. Decided once per model (factory or config) and process: a tiny packed forward
of two differently seeded models must equal their unpacked forwards, or the model trains
one trial per process (data-dependent code such as an MoE's routing cannot run under vmap)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from telescope.spec import TrialSpec

# Under vmap on CUDA (torch 2.11, H200), the cuDNN attention kernel's backward returns NaN
# gradients and the memory-efficient one fails ("LSE is not correctly aligned"); flash
# attention and the plain math are right. Flash first (bf16), math otherwise (fp32).
VMAP_SAFE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def logits_of(output: Any) -> torch.Tensor:
    """The logits a model returned: the tensor itself, or a Hugging Face ModelOutput's `.logits`."""
    return output if isinstance(output, torch.Tensor) else getattr(output, "logits", output)


@contextlib.contextmanager
def vmap_quietly() -> Iterator[None]:
    """Where a pack's forward runs under vmap: attention a vmapped backward gets right, and
    quiet about what torch cannot batch."""
    with warnings.catch_warnings(), sdpa_kernel(VMAP_SAFE_ATTENTION):
        # CPU flash attention has no vmap rule: torch runs it once per trial, and says so each step.
        warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule", category=UserWarning)
        yield


# How close the packed forward must come to the unpacked one (float rounding of batched matmuls).
TOLERANCE = 1e-4


def build_trial_module(spec: TrialSpec, seed: int, device: str | torch.device | None = None) -> nn.Module:
    """The user's model of `spec` at its width, built from `seed` and parametrized per its table."""
    from telescope.models import model_maker
    from telescope.models.foreign import build_user_model
    from telescope.roles import with_defaults

    maker, label = model_maker(spec.model_factory, spec.hf_config, spec.hf_config_hash)
    rules = with_defaults(spec.model_rules)
    if device is not None and torch.device(device).type == "meta":
        from telescope.models.foreign import apply_depth, apply_output_multiplier, make_model

        with torch.device("meta"):
            model = make_model(maker, spec.width, label)
        apply_output_multiplier(model, spec.parametrization, spec.width, spec.base_width, rules)
        apply_depth(model, spec.parametrization, spec.model.depth_alpha, spec.base_depth, rules)
        return model
    return build_user_model(
        maker,
        spec.parametrization,
        spec.width,
        spec.base_width,
        seed,
        rules,
        label,
        spec.model.depth_alpha,
        spec.base_depth,
    )


def packed_logits(template: nn.Module, params: dict, buffers: dict, inputs: torch.Tensor) -> torch.Tensor:
    """The k models' logits, (k, B, T, vocab), from stacked `params` through `template`."""

    def forward(p: dict, x: torch.Tensor) -> torch.Tensor:
        return logits_of(functional_call(template, (p, buffers), (x,)))

    with vmap_quietly():
        return vmap(forward, in_dims=(0, None))(params, inputs)


def batchable(spec: TrialSpec) -> bool:
    """Whether trials of `spec`'s model can share a pack (see the module docstring)."""
    return _batchable(
        spec.model_factory, spec.hf_config, spec.hf_config_hash, spec.model_rules, spec.parametrization, spec.base_width
    )


@functools.cache
def _batchable(factory, hf_config, hf_config_hash, rules, parametrization, width) -> bool:
    spec = TrialSpec(
        width=width,
        base_width=width,
        lr=1.0,
        weight_decay=0.0,
        parametrization=parametrization,
        model_factory=factory,
        model_rules=rules,
        hf_config=hf_config,
        hf_config_hash=hf_config_hash,
    )
    try:
        with torch.random.fork_rng(devices=[]):
            models = [build_trial_module(spec, seed) for seed in (0, 1)]
            for model in models:
                for p in model.parameters():  # a zero-initialised readout would hide any difference
                    p.data.normal_(0.0, 0.02)
            template = build_trial_module(spec, 0, device="meta")
            params, _ = stack_module_state(models)
            buffers = dict(models[0].named_buffers())
            inputs = torch.randint(0, 2, (2, 8))
            with torch.no_grad():
                packed = packed_logits(template, params, buffers, inputs)
                alone = torch.stack([logits_of(model(inputs)) for model in models])
        return packed.shape == alone.shape and bool(torch.allclose(packed, alone, atol=TOLERANCE, rtol=TOLERANCE))
    except Exception:  # noqa: BLE001 - whatever vmap cannot run (data-dependent routing) means one per process
        return False
