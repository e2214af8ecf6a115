"""The trial contract shared by the proxy, the search, the executors and storage.

A trial is one training run of a proxy model: a `TrialSpec` in, a stream of
`StepMetrics` and one `TrialResult` out. Everything here is plain data.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from telescope.errors import ConfigError


class Status(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"


FINISHED = (Status.COMPLETED, Status.DIVERGED, Status.FAILED)  # a trial that will not run again


# Hyperparameters a sweep may search over; each is a field of TrialSpec.
SWEEPABLE = ("lr", "weight_decay", "muon_lr_ratio")


@dataclass(frozen=True)
class ModelShape:
    """The proxy family: everything about the model except its width."""

    depth: int = 2
    head_dim: int = 32
    kv_ratio: int = 1  # query heads per KV head (grouped-query attention when > 1)
    mlp_ratio: float = 4.0  # gated-MLP hidden size = mlp_ratio * width
    vocab_size: int = 256
    tied_embeddings: bool = False
    seq_len: int = 64
    # The depth rule's branch exponent (docs/design.md §8): 0 off, 0.5 depth-muP, 1 CompleteP.
    depth_alpha: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """The optimizers' settings a sweep trains with, beyond the table: the target must
    train with the same ones (they move the optimum)."""

    grad_clip: float | None = None  # each trial's gradients clipped to this global norm; None: off
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    adamw_eps: float = 1e-8
    muon_momentum: float = 0.95
    muon_nesterov: bool = True

    @classmethod
    def from_fingerprint(cls, fp: dict[str, Any]) -> "Recipe":
        """The recipe a fingerprint (telescope.parametrization.fingerprint) records."""
        d = cls()
        return cls(
            fp.get("grad_clip"),
            tuple(fp.get("adamw_betas", d.adamw_betas)),
            fp.get("adamw_eps", d.adamw_eps),
            fp.get("muon_momentum", d.muon_momentum),
            fp.get("muon_nesterov", d.muon_nesterov),
        )


@dataclass(frozen=True)
class TrainSettings:
    """How each trial trains; identical for every trial of a sweep."""

    steps: int = 200
    batch_size: int = 16
    warmup_steps: int = 20
    schedule: Literal["cosine", "wsd"] = "cosine"
    final_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    eval_batches: int = 8  # held-out batches for the validation loss
    data: str = "stdlib"  # "stdlib" (default corpus) or a path
    data_dtype: Literal["uint16", "uint32", "int32"] | None = None  # tokens of a headerless .bin
    tokenizer: str | None = None  # a tokenizer.json that text is encoded with (else bytes)
    cross_documents: bool = True  # windows may cross documents where the format marks them
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    divergence_factor: float = 2.0  # loss above factor * initial loss counts as diverged
    # The optimizer recipe (see Recipe; defaults are Recipe's).
    grad_clip: float | None = Recipe.grad_clip
    adamw_beta1: float = Recipe.adamw_betas[0]
    adamw_beta2: float = Recipe.adamw_betas[1]
    adamw_eps: float = Recipe.adamw_eps
    muon_momentum: float = Recipe.muon_momentum
    muon_nesterov: bool = Recipe.muon_nesterov

    @property
    def recipe(self) -> Recipe:
        return Recipe(
            self.grad_clip, (self.adamw_beta1, self.adamw_beta2), self.adamw_eps, self.muon_momentum, self.muon_nesterov
        )


def check_token_count(train: TrainSettings, seq_len: int) -> None:
    """A ConfigError when a trial's token count would not fit the 64-bit counters it is kept in."""
    if train.steps * train.batch_size * seq_len >= 2**63:
        raise ConfigError(
            f"train.steps: {train.steps} steps of {train.batch_size} x {seq_len} tokens overflow a 64-bit count"
        )


@dataclass(frozen=True)
class TrialSpec:
    width: int
    base_width: int  # muP width multiplier m = width / base_width
    lr: float  # base learning rate eta0
    weight_decay: float  # coupled weight decay lambda
    muon_lr_ratio: float = 1.0  # Muon-to-AdamW learning-rate ratio (a table constant)
    parametrization: str = "paper"
    seed: int = 0
    model: ModelShape = field(default_factory=ModelShape)
    train: TrainSettings = field(default_factory=TrainSettings)
    # "package.module:factory" (width -> nn.Module): train the user's model instead of the
    # proxy; `model` then only gives seq_len and vocab_size.
    model_factory: str | None = None
    # Role rules for the user's model, tried before telescope.roles.FOREIGN_RULES:
    # (regular expression, role) pairs, or ("<kind>", role) for a KindRule.
    model_rules: tuple[tuple[str, str], ...] = ()
    # A Hugging Face config.json (absolute path) to build the user's model from at `width`,
    # and the hash of its architecture (telescope.models.hf), checked where it is built.
    hf_config: str | None = None
    hf_config_hash: str | None = None
    # The depth the base values refer to (the depth rule's L_base); None: the model's own
    # depth, so the depth factors are 1 (a sweep's trials). A check across depths sets it.
    base_depth: int | None = None

    @property
    def user_model(self) -> bool:
        """Whether the trial trains the user's model (a factory or a Hugging Face config)."""
        return self.model_factory is not None or self.hf_config is not None

    def to_dict(self) -> dict[str, Any]:
        """Every field, except the depth fields at their defaults: a trial without depth
        transfer has the dict (and so the content key) it had before they existed."""
        d = dataclasses.asdict(self)
        if d["base_depth"] is None:
            del d["base_depth"]
        if d["model"]["depth_alpha"] == 0.0:
            del d["model"]["depth_alpha"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        d = dict(d)
        d["model"] = ModelShape(**d.get("model", {}))
        d["train"] = TrainSettings(**d.get("train", {}))
        d["model_rules"] = tuple(tuple(pair) for pair in d.get("model_rules", ()))
        return cls(**d)


@dataclass(frozen=True)
class StepMetrics:
    step: int
    tokens: int
    train_loss: float
    lr: float  # base learning rate at this step (schedule applied)
    grad_norm: float
    elapsed: float  # seconds since the trial started


@dataclass
class TrialResult:
    status: Status
    train_loss: float | None = None  # final (smoothed over the last steps) train loss
    val_loss: float | None = None
    tokens: int = 0
    flops: float = 0.0
    wall_time: float = 0.0
    steps: int = 0
    device: str = ""
    error: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialResult":
        d = dict(d)
        d["status"] = Status(d["status"])
        return cls(**d)


MetricsCallback = Callable[[StepMetrics], None]


def objective_value(result: Any, objective: str) -> float | None:
    """The loss a search ranks `result` by (a TrialResult or a stored trial row):
    its validation loss, or its final train loss when `objective` is "train_loss"."""
    return result.train_loss if objective == "train_loss" else result.val_loss
