"""What a transfer check runs: its settings (defaults, from a sweep config, or from the
command line), their checks before anything is written, and the check of a user's model
that the built-in proxy's shape does not cover. The run itself: telescope.transfer_check.run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from telescope.errors import ConfigError, TelescopeError
from telescope.models import ModelSource
from telescope.runs import keys
from telescope.spec import ModelShape, TrainSettings, TrialSpec
from telescope.transfer_check.analysis import (
    DEFAULT_EXTENSION_POINTS,
    DEFAULT_MAX_EXTENSIONS,
    DEFAULT_THRESHOLD_STEPS,
    SQRT2,
)

KIND = "transfer-check"
DEFAULT_WIDTHS = (64, 256)
DEFAULT_DEPTH_WIDTH = 64  # a check across depths without a config runs at this width
DEFAULT_CHECK_POINTS = 5
DEFAULT_SEEDS = 2
DEFAULT_CHECK_TRAIN = TrainSettings(steps=200, batch_size=16, warmup_steps=20)
DEFAULT_CHECK_SHAPE = ModelShape(depth=2, head_dim=32, seq_len=64)


@dataclass(frozen=True)
class CheckSettings:
    """Everything a transfer check runs. `lr_center=None` means the table's default LR;
    `base_width=None` means the first width (m = 1 there)."""

    parametrization: str = "paper"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    base_width: int | None = None
    lr_center: float | None = None
    points: int = DEFAULT_CHECK_POINTS
    seeds: int = DEFAULT_SEEDS
    seed_base: int = 0
    weight_decay: float = 0.0
    muon_lr_ratio: float = 1.0
    step: float = SQRT2
    threshold: float = DEFAULT_THRESHOLD_STEPS
    loss_tolerance: float = 0.0
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    extension_points: int = DEFAULT_EXTENSION_POINTS
    objective: Literal["val_loss", "train_loss"] = "val_loss"
    model: ModelShape = DEFAULT_CHECK_SHAPE
    train: TrainSettings = DEFAULT_CHECK_TRAIN
    model_factory: str | None = None
    model_rules: tuple[tuple[str, str], ...] = ()  # role rules for the user's model, before FOREIGN_RULES
    hf_config: str | None = None  # or a Hugging Face config.json (absolute) the user's model is built from
    hf_config_hash: str | None = None
    # Check across these depths (increasing) at the one width widths[0]; the first is the base depth.
    depths: tuple[int, ...] = ()

    @property
    def user_model(self) -> bool:
        return self.model_factory is not None or self.hf_config is not None

    @property
    def axis(self) -> Literal["width", "depth"]:
        return "depth" if self.depths else "width"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The values along the checked axis: the depths, or the widths."""
        return self.depths or self.widths

    @property
    def center(self) -> float:
        if self.lr_center is not None:
            return self.lr_center
        from telescope.parametrization import get_table

        return get_table(self.parametrization).default_lr

    @property
    def base(self) -> int:
        return self.base_width if self.base_width is not None else self.widths[0]

    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed_base, self.seed_base + self.seeds))

    def trial_settings(self) -> dict[str, Any]:
        """What decides the trials (stored with the check; the verdict's knobs are not in it,
        so changing --threshold reuses the stored trials)."""
        d = dataclasses.asdict(self)
        for key in ("threshold", "loss_tolerance", "max_extensions", "extension_points", "objective"):
            d.pop(key)
        d["widths"] = list(self.widths)
        d["base_width"], d["lr_center"] = self.base, self.center
        if self.hf_config is None:  # a check of the proxy or a factory keeps the name it had
            del d["hf_config"], d["hf_config_hash"]
        if self.depths:
            d["depths"] = list(self.depths)
        else:  # a width check's settings (and so its default name) as before depth checks existed
            del d["depths"]
        if not self.model.depth_alpha:
            del d["model"]["depth_alpha"]
        return d

    def default_name(self) -> str:
        """`transfer-check-TABLE-HASH`: the same settings resume the same check."""
        return keys.default_name(KIND, self.parametrization, self.trial_settings())


def check_settings(settings: CheckSettings) -> None:
    """TelescopeError (one line) for settings that cannot run; nothing is written before this."""
    from telescope.parametrization import get_table
    from telescope.proxy.model import check_shape
    from telescope.training.train import check_spec

    get_table(settings.parametrization)
    ws = settings.widths
    if settings.depths:
        ds = settings.depths
        if len(ds) < 2 or any(b <= a for a, b in zip(ds, ds[1:])) or ds[0] <= 0:
            raise ConfigError(f"--depths needs at least two positive, strictly increasing depths, got {list(ds)}")
        if len(ws) != 1 or ws[0] <= 0:
            raise ConfigError(f"a check across depths runs at one positive width, got {list(ws)}")
        if settings.user_model:
            raise ConfigError("--depths checks the built-in proxy; your model decides its own depth")
    elif len(ws) < 2 or any(b <= a for a, b in zip(ws, ws[1:])) or ws[0] <= 0:
        raise ConfigError(f"--widths needs at least two positive, strictly increasing widths, got {list(ws)}")
    if settings.points < 3:
        raise ConfigError(f"--points must be >= 3 to locate an optimum, got {settings.points}")
    if settings.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {settings.seeds}")
    if not (settings.center > 0 and math.isfinite(settings.center)):
        raise ConfigError(f"--lr must be a positive number, got {settings.center}")
    if not settings.threshold > 0:
        raise ConfigError(f"--threshold must be > 0 grid steps, got {settings.threshold}")
    if settings.weight_decay < 0 or settings.muon_lr_ratio <= 0:
        raise ConfigError("weight decay must be >= 0 and muon_lr_ratio > 0")
    spec = trial_spec(settings, settings.sizes[0], settings.center, settings.seed_base)
    check_spec(spec)
    if not settings.user_model:
        for size in settings.sizes:
            check_shape(trial_spec(settings, size, settings.center, settings.seed_base).model, spec.width)
    else:
        check_foreign_model(
            settings.model_factory,
            settings.parametrization,
            ws[0],
            settings.base,
            settings.model,
            settings.model_rules,
            settings.hf_config,
            settings.hf_config_hash,
        )


def check_foreign_model(
    factory: str | None,
    parametrization: str,
    width: int,
    base_width: int,
    shape: ModelShape,
    rules: tuple[tuple[str, str], ...] = (),
    hf_config: str | None = None,
    hf_config_hash: str | None = None,
) -> None:
    """Build the user's model (a factory, or a Hugging Face config) at `width`, classify its
    parameters and run one forward pass: a bad factory, an unmatched parameter, no
    unembedding or outputs that are not logits over the vocabulary are each one
    TelescopeError line."""
    import torch

    from telescope.models import model_maker
    from telescope.models.foreign import build_user_model
    from telescope.models.packing import logits_of
    from telescope.roles import with_defaults

    maker, name = model_maker(factory, hf_config, hf_config_hash)
    model = build_user_model(
        maker, parametrization, width, base_width, 0, with_defaults(rules), name, shape.depth_alpha
    )
    label = f"factory {factory!r}" if factory is not None else name
    idx = torch.zeros(1, shape.seq_len, dtype=torch.long)
    try:
        with torch.no_grad():
            out = logits_of(model(idx))
    except Exception as e:  # noqa: BLE001 - the user's forward failed; say how, in one line
        raise TelescopeError(
            f"model {label}: forward on token ids (1, {shape.seq_len}) failed: {type(e).__name__}: {e}".replace(
                "\n", " "
            )
        ) from None
    if (
        not isinstance(out, torch.Tensor)
        or out.ndim != 3
        or out.shape[:2] != idx.shape
        or out.shape[2] < shape.vocab_size
    ):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TelescopeError(
            f"model {label} must map token ids (batch, seq) to logits (batch, seq, >= {shape.vocab_size}), got {got}"
        )


def settings_from_config(
    config: Any,
    widths: Sequence[int] | None = None,
    **overrides: Any,
) -> CheckSettings:
    """Check settings from a sweep config: its model (the built-in proxy's shape, or the
    user's model its `[model]` names: factory or hf_config, with its rules), train settings,
    parametrization and base width; the LR line centred on the middle of its lr range (or
    its fixed lr), weight decay and muon_lr_ratio at their fixed values or the middle of
    their ranges. Default widths: the sweep's first widths, `first_widths(config)` (across
    depths, its base width)."""
    values = config.search.centre()
    if widths is None:
        widths = (config.widths.base,) if overrides.get("depths") else first_widths(config)
    return CheckSettings(
        parametrization=config.parametrization,
        widths=tuple(widths),
        base_width=config.widths.base,
        lr_center=values.get("lr"),
        weight_decay=values.get("weight_decay", 0.0),
        muon_lr_ratio=values.get("muon_lr_ratio", 1.0),
        objective=config.objective,
        model=config.model,
        train=config.train,
        seed_base=config.seeds.base,
        **config.source.carried(),
        **overrides,
    )


def first_widths(config: Any) -> tuple[int, ...]:
    """The sweep's first widths for a check: its base width and the width two doublings up
    (one when the calibration width is only twice the base)."""
    base, calibration = config.widths.base, config.widths.calibration
    if calibration <= base:
        raise ConfigError(
            f"a transfer check needs two widths but the config's base and calibration widths are both {base}; pass "
            "--widths"
        )
    return (base, min(4 * base, calibration))


def trial_spec(settings: CheckSettings, size: int, lr: float, seed: int) -> TrialSpec:
    """The trial at one size of the axis: a width, or (across depths) a depth at the one width."""
    width, depth = (settings.widths[0], size) if settings.depths else (size, None)
    return TrialSpec(
        width=width,
        base_width=settings.base,
        base_depth=settings.depths[0] if depth is not None else None,
        lr=lr,
        weight_decay=settings.weight_decay,
        muon_lr_ratio=settings.muon_lr_ratio,
        parametrization=settings.parametrization,
        seed=seed,
        model=settings.model if depth is None else dataclasses.replace(settings.model, depth=depth),
        train=settings.train,
        **ModelSource.carried_by(settings).carried(),
    )
