"""Before a sweep of the user's model trains anything: does its forward run on the
sweep's data, and do its proxies pass a coord check at the level widths?

`check_user_model(config)` returns the verdict as plain data (`UserModelCheck.to_dict()`)
for the sweep's record; bad input (a factory that fails, a forward that fails on a batch
of the data, logits narrower than the data's vocabulary) is a TelescopeError, one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from telescope.errors import TelescopeError

# The check's verdict must not flip with the ladder. Measured on a transformers Llama (head
# dim 16, 10 steps, lr 0.01): at widths 32, 64, 128 its lm_head slope was -0.21, -0.12 and
# -0.16 over seeds 0, 1, 2 (one seed FAILed on an MLP layer at -0.25), at 64, 128, 256
# -0.04; with 30 steps at 32, 64, 128 it was 0.01-0.03 but an MLP layer still FAILed one seed
# at -0.33. So: width 32 is not yet in the asymptotic regime after a few steps (its
# readout's first updates rival its init), and one seed is noise. The check starts its
# ladder at COORD_MIN_WIDTH or the base width, whichever is wider, trains at least
# COORD_WIDTHS widths, and averages the activation sizes over COORD_SEEDS seeds.
COORD_STEPS = 10
COORD_WIDTHS = 3
COORD_MIN_WIDTH = 64
COORD_SEEDS = 2


@dataclass(frozen=True)
class LayerSlope:
    layer: str
    roles: str  # the roles of the layer's own parameters, e.g. "hidden, vector"
    slope: float
    passed: bool


@dataclass(frozen=True)
class UserModelCheck:
    """The pre-sweep check's verdict: `check` is "coord" or "none" (then nothing ran)."""

    check: str
    passed: bool
    widths: tuple[int, ...] = ()
    steps: int = 0
    lr: float = 0.0
    threshold: float = 0.0
    layers: tuple[LayerSlope, ...] = field(default_factory=tuple)

    def failing(self) -> list[LayerSlope]:
        return [layer for layer in self.layers if not layer.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_forward(model: nn.Module, inputs: torch.Tensor, vocab_size: int, label: str, data: str) -> None:
    """A TelescopeError (one line) unless `model(inputs)` runs and its logits cover the
    data's `vocab_size` tokens. A batch of token 0 goes first, so a vocabulary too small
    for the data is named as such rather than as an index error."""
    from telescope.models.packing import logits_of

    with torch.no_grad():
        try:
            logits = logits_of(model(torch.zeros_like(inputs)))
        except Exception as e:  # noqa: BLE001 - the user's forward failed: say so in one line
            raise TelescopeError(
                f"model {label}: its forward fails on a batch of the data {data!r}: {_one_line(e)}"
            ) from None
        if not isinstance(logits, torch.Tensor) or logits.shape[:-1] != inputs.shape:
            if isinstance(logits, torch.Tensor):
                got = f"logits of shape {tuple(logits.shape)}"
            else:
                got = f"a {type(logits).__name__}, not logits"
            raise TelescopeError(
                f"model {label}: returned {got} for inputs of shape {tuple(inputs.shape)}; "
                "it must return logits (batch, seq, vocab) or an object with .logits"
            )
        if logits.shape[-1] < vocab_size:
            raise TelescopeError(
                f"model {label}: its logits have {logits.shape[-1]} entries but the data {data!r} has "
                f"{vocab_size} tokens: give the model a vocabulary of at least {vocab_size}"
            )
        try:
            model(inputs)
        except Exception as e:  # noqa: BLE001
            raise TelescopeError(
                f"model {label}: its forward fails on a batch of the data {data!r}: {_one_line(e)}"
            ) from None


def coord_widths(base: int, calibration: int) -> tuple[int, ...]:
    """The widths the check trains: the sweep's level widths from COORD_MIN_WIDTH up,
    extended by doubling to at least COORD_WIDTHS of them."""
    widths = [base]
    while widths[0] < COORD_MIN_WIDTH:
        widths[0] *= 2
    while widths[-1] < calibration or len(widths) < COORD_WIDTHS:
        widths.append(widths[-1] * 2)
    return tuple(widths)


def check_user_model(config: Any, coord: bool | None = None) -> UserModelCheck:
    """Build the user's model at the sweep's base width, run it on a batch of the sweep's
    data, then (unless `[model] check = "none"`, or `coord` says otherwise) coord-check
    its proxies at the level widths."""
    from telescope.data.load import load_train_data
    from telescope.models import model_maker
    from telescope.models.foreign import build_user_model
    from telescope.roles import with_defaults

    source, train = config.source, config.train
    data = load_train_data(train)
    maker, label = model_maker(source.factory, source.hf_path, source.hf_config_hash)
    model = build_user_model(
        maker, config.parametrization, config.widths.base, config.widths.base, 0, with_defaults(source.rules), label
    )
    inputs, _ = data.train_batch(0, min(train.batch_size, 2), config.model.seq_len, 0)
    check_forward(model, inputs, data.vocab_size, label, train.data)
    if not (source.check == "coord" if coord is None else coord):
        return UserModelCheck("none", True)
    return _coord(config)


def _coord(config: Any) -> UserModelCheck:
    from telescope.coord.study import CoordCheckSettings, coord_check
    from telescope.roles import classify, with_defaults

    source = config.source
    settings = CoordCheckSettings(
        parametrization=config.parametrization,
        widths=coord_widths(config.widths.base, config.widths.calibration),
        steps=COORD_STEPS,
        seeds=COORD_SEEDS,
        shape=config.model,
        data=config.train.data,
        model_factory=source.factory,
        model_rules=source.rules,
        hf_config=source.hf_path,
        hf_config_hash=source.hf_config_hash,
    )
    result = coord_check(settings)
    from telescope.models.measure import build_on_meta

    roles: dict[str, set[str]] = {}
    for c in classify(build_on_meta(source, config.widths.base), with_defaults(source.rules)):
        for alias in c.aliases:
            roles.setdefault(alias.rpartition(".")[0], set()).add(c.role)
    layers = tuple(
        LayerSlope(
            v.layer, ", ".join(sorted(roles.get(v.layer, {"output"} if v.layer == "logits" else ()))), v.slope, v.passed
        )
        for v in result.layers
    )
    return UserModelCheck(
        "coord", result.passed, tuple(sorted(settings.widths)), settings.steps, result.lr, settings.threshold, layers
    )


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]
