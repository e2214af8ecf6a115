"""One trial: train a proxy from a TrialSpec, stream step metrics, return a TrialResult.

Exceptions other than divergence propagate: the executor catches them in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telescope.data import load_train_data
from telescope.errors import ConfigError, TelescopeError
from telescope.models import model_identity
from telescope.models.packing import logits_of
from telescope.numbers import finite_or_none
from telescope.optim.groups import Optimizers, build_optimizers
from telescope.parametrization import Table, fingerprint, get_table
from telescope.proxy.model import build_model
from telescope.roles import PROXY_RULES, with_defaults
from telescope.spec import (
    MetricsCallback,
    Status,
    StepMetrics,
    TrainSettings,
    TrialResult,
    TrialSpec,
    check_token_count,
)
from telescope.training.packed import PackedProxies

SMOOTHING_STEPS = 10  # the reported train loss is the mean over this many final steps
HOST_SYNC_STEPS = 16  # on an accelerator, losses are read (and divergence checked) every this many steps
WSD_DECAY_FRACTION = 0.2  # WSD: the last 20% of the steps decay linearly


def pack_key(spec: TrialSpec) -> TrialSpec | None:
    """Trials with equal keys can share a pack: everything but LR, weight decay, Muon LR
    ratio and seed is equal. A user's model (a factory or a Hugging Face config) is packed
    when telescope.models.packing finds it batchable; else None: one trial per process."""
    if spec.user_model:
        from telescope.models.packing import batchable

        if not batchable(spec):
            return None
    return dataclasses.replace(spec, lr=1.0, weight_decay=0.0, muon_lr_ratio=1.0, seed=0)


def lr_multiplier(step: int, train: TrainSettings) -> float:
    """Fraction of the peak LR at 0-based `step`: linear warmup, then cosine (or WSD) decay
    to `final_lr_ratio` at the last step."""
    warmup = min(train.warmup_steps, train.steps)
    if step < warmup:
        return (step + 1) / warmup
    final = train.final_lr_ratio
    if train.schedule == "wsd":
        decay_steps = max(1, round(WSD_DECAY_FRACTION * train.steps))
        decay_start = max(warmup, train.steps - decay_steps)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start + 1) / max(1, train.steps - decay_start)
        return 1.0 - (1.0 - final) * min(1.0, progress)
    progress = (step - warmup) / max(1, train.steps - 1 - warmup)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def check_device_name(name: str, where: str = "device") -> None:
    """A ConfigError unless `name` is auto, cpu, cuda, cuda:N (or mps, xpu)."""
    if name == "auto":
        return
    try:
        kind = torch.device(name).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in _DEVICE_TYPES:
        raise ConfigError(f"{where}: unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str, where: str = "device") -> torch.device:
    """ "auto" picks CUDA when present; a device this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name, where)
    device = torch.device(name)
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type)
    if not backend.is_available():
        raise ConfigError(
            f"{where} is {name!r} but this machine has no {device.type.upper()} GPU: run it on a GPU machine, "
            "pass --ray-address of a cluster with GPUs, or use cpu"
        )
    if device.index is not None and device.index >= backend.device_count():
        raise ConfigError(f"{where} is {name!r} but this machine has {backend.device_count()} {device.type} device(s)")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def host_sync_steps(device: torch.device) -> int:
    """Steps between reads of the loss by the host: every step on the CPU (nothing to gain
    by waiting), HOST_SYNC_STEPS on a GPU, which then runs ahead of the Python loop."""
    return 1 if device.type == "cpu" else HOST_SYNC_STEPS


def check_spec(spec: TrialSpec) -> None:
    """A ConfigError naming the first field of `spec` no trial can run with."""
    for name, value, lowest in (("lr", spec.lr, 0.0), ("muon_lr_ratio", spec.muon_lr_ratio, 0.0)):
        if not (math.isfinite(value) and value > lowest):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    if not (math.isfinite(spec.weight_decay) and spec.weight_decay >= 0):
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {spec.weight_decay}")
    if spec.width < 1 or spec.base_width < 1:
        raise ConfigError(f"width and base_width must be >= 1, got {spec.width} and {spec.base_width}")
    t = spec.train
    if t.steps < 1 or t.batch_size < 1 or t.eval_batches < 1:
        raise ConfigError("train.steps, train.batch_size and train.eval_batches must be >= 1")
    check_token_count(t, spec.model.seq_len)
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    if t.schedule not in ("cosine", "wsd"):
        raise ConfigError(f"train.schedule must be cosine or wsd, got {t.schedule!r}")
    if not 0.0 <= t.final_lr_ratio <= 1.0:
        raise ConfigError(f"train.final_lr_ratio must be in [0, 1], got {t.final_lr_ratio}")
    if t.divergence_factor <= 1.0:
        raise ConfigError(f"train.divergence_factor must be > 1, got {t.divergence_factor}")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits_of(model(inputs))
    if not isinstance(logits, torch.Tensor):
        raise TelescopeError(
            f"the model returned a {type(logits).__name__}, not logits: its forward must return the logits "
            "tensor (batch, sequence, vocabulary), or an output with a .logits field"
        )
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@torch.no_grad()
def validation_loss(model: nn.Module, batches, device: torch.device) -> float:
    """A model's mean loss over the held-out `batches`, in eval mode."""
    return validation_losses(_Evaluated(model), batches, device)[0]


class _Evaluated:
    """A model seen as a pack of one, for validation_losses."""

    def __init__(self, model: nn.Module):
        self.model, self.k = model, 1

    def losses(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return loss_fn(self.model, inputs, targets).unsqueeze(0)

    def train(self, mode: bool) -> None:
        self.model.train(mode)


@torch.no_grad()
def validation_losses(learner: "_Evaluated | PackedProxies", batches, device: torch.device) -> list[float]:
    """Each trial's mean loss over the held-out `batches`, in eval mode."""
    learner.train(False)
    total = torch.zeros(learner.k, device=device)
    for inputs, targets in batches:
        with autocast(device):
            total += learner.losses(inputs.to(device), targets.to(device)).float()
    learner.train(True)
    return (total / len(batches)).tolist()


def train_flops(spec: TrialSpec, tokens: int) -> float:
    """The trial's training FLOPs as `telescope plan` counts them (telescope.cost)."""
    if spec.user_model:
        from telescope.models import ModelSource
        from telescope.models.measure import train_flops as model_train_flops

        return model_train_flops(ModelSource.carried_by(spec), spec.width, spec.model.seq_len, tokens)
    from telescope.cost import train_flops as cost_train_flops

    return cost_train_flops(spec.model, spec.width, tokens)


def build_trial_model(spec: TrialSpec, table: Table, device: torch.device) -> tuple[nn.Module, Optimizers]:
    """The model the trial trains, initialised from `spec.seed` on `device`, and its optimizers
    (with the spec's recipe): the proxy, or the user's model (a factory or a Hugging Face
    config) parametrized per the same table."""
    if not spec.user_model:
        generator = torch.Generator().manual_seed(spec.seed)
        model = build_model(spec.model, spec.width, spec.base_width, table, generator, spec.base_depth).to(device)
        rules, depth = PROXY_RULES, model.depth
    else:
        from telescope.models import model_maker
        from telescope.models.foreign import build_user_model, user_depth

        rules = with_defaults(spec.model_rules)
        maker, label = model_maker(spec.model_factory, spec.hf_config, spec.hf_config_hash)
        model = build_user_model(
            maker, table, spec.width, spec.base_width, spec.seed, rules, label, spec.model.depth_alpha, spec.base_depth
        ).to(device)
        depth = user_depth(model, rules, spec.model.depth_alpha, spec.base_depth)
    optimizers = build_optimizers(
        model,
        table,
        spec.lr,
        spec.weight_decay,
        spec.width,
        spec.base_width,
        spec.muon_lr_ratio,
        rules,
        recipe=spec.train.recipe,
        depth=depth,
    )
    return model, optimizers


class _Single(_Evaluated):
    """One model and its optimizers behind the interface of PackedProxies (k = 1)."""

    def __init__(self, spec: TrialSpec, table: Table, device: torch.device):
        model, self.optimizers = build_trial_model(spec, table, device)
        super().__init__(model)
        self._params = [p for p in model.parameters() if p.requires_grad]

    def grad_norms(self) -> Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None]).unsqueeze(0)

    def set_lr_multiplier(self, multiplier: float) -> None:
        self.optimizers.set_lr_multiplier(multiplier)

    def step(self) -> None:
        self.optimizers.step()

    def zero_grad(self) -> None:
        self.optimizers.zero_grad()


def run_trial(spec: TrialSpec, on_metrics: MetricsCallback | None = None) -> TrialResult:
    """Train the proxy (or user model) `spec` describes; stop early with Status.DIVERGED when
    the loss is non-finite or exceeds divergence_factor times the first step's loss."""
    return run_trials([spec], [on_metrics])[0]


def run_trials(
    specs: Sequence[TrialSpec],
    on_metrics: Sequence[MetricsCallback | None] | None = None,
    reference: bool = False,
) -> list[TrialResult]:
    """Train the trials `specs` describe as one pack (see telescope.training.packed) and return
    their results in order. Each trial streams its own metrics to `on_metrics[i]` and stops
    recording when it diverges; the pack runs until every trial has finished or diverged. A
    packed trial's wall_time is its share of the pack's (pack wall time / k), and its device
    says so ("cpu, pack of 8").

    A proxy trial alone is a pack of one, so its numbers do not depend on its pack-mates:
    the batched ops compute each trial's slice with the same kernels whatever the pack.
    `reference=True` trains one trial unbatched with torch's AdamW instead, the math the
    packed path is checked against (a user's model that cannot be batched always trains
    so, one trial at a time: telescope.models.packing)."""
    started = time.perf_counter()
    callbacks = list(on_metrics) if on_metrics is not None else [None] * len(specs)
    for spec in specs:
        check_spec(spec)
    spec = specs[0]
    if len(specs) > 1 and (pack_key(spec) is None or any(pack_key(s) != pack_key(spec) for s in specs)):
        raise ValueError("packed trials must differ only in lr, weight_decay, muon_lr_ratio and seed")
    table = get_table(spec.parametrization)
    data = load_train_data(spec.train)
    data.check_vocab(spec.model.vocab_size)
    device = resolve_device(spec.train.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    packable = pack_key(spec) is not None and not reference
    if not packable and len(specs) > 1:
        raise ValueError("a reference run, or a model that cannot be batched, trains one trial at a time")
    learner = PackedProxies(specs, table, device) if packable else _Single(spec, table, device)
    k, B, T = len(specs), spec.train.batch_size, spec.model.seq_len
    seeds = [s.seed for s in specs]
    val_batches = data.val_batches(spec.train.eval_batches, B, T)

    losses: list[list[float]] = [[] for _ in specs]
    status = [Status.COMPLETED] * k
    running = list(range(k))  # trials still recording
    pending: list[tuple[Tensor, float]] = []  # per step: (2, k) losses and grad norms, LR multiplier
    every = host_sync_steps(device)
    for step in range(spec.train.steps):
        inputs, targets = _batch(data, step, B, T, seeds, device)
        multiplier = lr_multiplier(step, spec.train)
        learner.set_lr_multiplier(multiplier)
        with autocast(device):
            step_losses = learner.losses(inputs, targets)
        step_losses.sum().backward()
        pending.append((torch.stack([step_losses.detach().float(), learner.grad_norms().float()]), multiplier))
        if len(pending) == every or step == spec.train.steps - 1:
            # One host sync for the steps since the last: on a GPU the loop does not wait
            # for every step's loss (a diverged trial then stops up to `every` - 1 steps late,
            # having recorded exactly the steps up to the divergence).
            values = torch.stack([v for v, _ in pending]).tolist()
            for offset, ((loss_row, norm_row), (_, step_multiplier)) in enumerate(zip(values, pending)):
                done = step - len(pending) + 1 + offset  # the step these values belong to
                for i in list(running):
                    losses[i].append(loss_row[i])
                    if callbacks[i] is not None:
                        callbacks[i](
                            StepMetrics(
                                step=done + 1,
                                tokens=(done + 1) * B * T,
                                train_loss=loss_row[i],
                                lr=specs[i].lr * step_multiplier,
                                grad_norm=norm_row[i],
                                elapsed=time.perf_counter() - started,
                            )
                        )
                    if not math.isfinite(loss_row[i]) or loss_row[i] > spec.train.divergence_factor * losses[i][0]:
                        status[i] = Status.DIVERGED
                        running.remove(i)
            pending = []
            if not running:
                break
        learner.step()
        learner.zero_grad()

    val_losses: list[float | None] = [None] * k
    if any(s is Status.COMPLETED for s in status):
        measured = validation_losses(learner, val_batches, device)
        for i in range(k):
            if status[i] is Status.COMPLETED:
                val_losses[i] = finite_or_none(measured[i])
                if val_losses[i] is None:
                    status[i] = Status.DIVERGED
    wall_time = (time.perf_counter() - started) / k
    where = describe_device(device) + (f", pack of {k}" if k > 1 else "")
    identity = model_identity(spec.model_factory, spec.hf_config, spec.hf_config_hash)
    results = []
    for i, trial in enumerate(specs):
        tail = losses[i][-SMOOTHING_STEPS:]
        tokens = len(losses[i]) * B * T
        results.append(
            TrialResult(
                status=status[i],
                train_loss=finite_or_none(sum(tail) / len(tail)),
                val_loss=val_losses[i],
                tokens=tokens,
                flops=train_flops(trial, tokens),
                wall_time=wall_time,
                steps=len(losses[i]),
                device=where,
                fingerprint=fingerprint(
                    table, trial.muon_lr_ratio, trial.train.recipe, identity, trial.model.depth_alpha
                ),
            )
        )
    return results


def _batch(data, step: int, B: int, T: int, seeds: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """The step's batch: (B, T) when every trial has the same seed, else (k, B, T)."""
    if len(set(seeds)) == 1:
        return tuple(t.to(device) for t in data.train_batch(step, B, T, seeds[0]))
    pairs = [data.train_batch(step, B, T, seed) for seed in seeds]
    return tuple(torch.stack(column).to(device) for column in zip(*pairs))
