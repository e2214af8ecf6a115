"""Before a sweep of the user's model trains anything: does its forward run on the
sweep's data, and do its proxies pass a coord check at the level widths?

`check_user_model(config)` returns the verdict as plain data (`UserModelCheck.to_dict()`)
for the sweep's record; bad input (a factory that fails, a forward that fails on a batch
of the data, logits narrower than the data's vocabulary) is a TelescopeError, one line.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from telescope.coord.verdict import LayerSlope, UserModelCheck
from telescope.errors import TelescopeError
from telescope.parametrization import Table

# The check's verdict must not flip with the ladder or the seed. Measured on transformers
# Llamas under `paper`, 10 steps at lr 0.01 (tests/hf_models.py's tiny one: one layer, head
# dim 16, tied, 6 seeds; examples/llama/config.json: four layers, head dim 32, 4 seeds):
# - Width 32 is not yet in the asymptotic regime after a few steps: single-seed slopes
#   spread more at 32, 64, 128 than at 64, 128, 256. So the check's ladder starts at
#   COORD_MIN_WIDTH, and averages the activation sizes over COORD_SEEDS seeds.
# - The hidden layers' activations shrink with width by design. `paper` gives Muon's hidden
#   matrices an LR of 1/m, and an orthogonalized update of RMS-matched size moves a layer's
#   output by lr * sqrt(fan_in), so their change goes as m**-0.5: init (flat) + change
#   (m**-0.5) measures a slope between 0 and -0.5 that grows with the steps. down_proj
#   measured -0.14 (6-seed mean; single seeds to -0.22) at 10 steps, -0.30 at 20 and -0.41
#   at 30 on 64, 128, 256 (the four-layer Llama: single seeds to -0.36 at 10 steps); under
#   `muon` (hidden LR 1/sqrt(m): no shrinking by design) -0.01 and -0.08.
# - The readout may shrink too: muP asks only that the logits not grow. A zero-initialised
#   readout starts at 0, a tied one at m**-0.5 (measured: -0.50 at init).
# So a layer passes when its slope lies in [floor - t, t]: floor is the fastest shrinking the
# table designs for it (0; -0.5 for the readout; for a hidden layer lr_exponent + 1/2 under
# Muon, + 1 under AdamW), and t = 0.25 is halfway from the right exponent to the nearest
# wrong one (a width factor the model applies itself, e.g. logits times width, moves a
# layer by m**+-0.5 or more). Growth always fails. With the symmetric |slope| <= 0.25 these
# correct Llamas passed with 2-seed margins down to 0.02 (4 of 20 single seeds FAILed);
# with these bounds the smallest 2-seed margin is 0.17 on 64, 128, 256 and 0.15 on 32, 64,
# 128, and no single seed fails.
COORD_STEPS = 10
COORD_WIDTHS = 3
COORD_MIN_WIDTH = 64
COORD_SEEDS = 2
THRESHOLD = 0.25
READOUT_FLOOR = -0.5


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
    return coord_verdict(config, coord_widths(config.widths.base, config.widths.calibration))


def coord_verdict(config: Any, widths: tuple[int, ...]) -> UserModelCheck:
    """The coord check of the user's proxies at `widths` (base width: the narrowest), on the
    sweep's data, judged per layer (see the bounds above COORD_STEPS)."""
    from telescope.coord.study import CoordCheckSettings, coord_check

    settings = CoordCheckSettings(
        parametrization=config.parametrization,
        widths=widths,
        steps=COORD_STEPS,
        seeds=COORD_SEEDS,
        threshold=THRESHOLD,
        shape=config.model,
        data=config.train.data,
        **config.source.carried(),
    )
    result = coord_check(settings)
    layers = tuple(LayerSlope(v.layer, v.roles, v.slope, v.passed, v.low, v.high) for v in result.layers)
    return UserModelCheck(
        "coord",
        result.passed,
        tuple(sorted(settings.widths)),
        settings.steps,
        result.lr,
        THRESHOLD,
        layers,
        settings.seeds,
    )


def judge_user_layers(
    settings: Any, widths: tuple[int, ...], sizes: Mapping[str, np.ndarray]
) -> tuple[LayerSlope, ...]:
    """The layers of the user's model that `settings` (CoordCheckSettings) checked, judged
    within the bounds its table designs for each (see above COORD_STEPS)."""
    from telescope.models import ModelSource
    from telescope.parametrization import get_table

    roles, readout = layer_roles(ModelSource.carried_by(settings), min(widths))
    return judge_layers(widths, sizes, roles, readout, get_table(settings.parametrization), settings.threshold)


def layer_roles(source: Any, width: int) -> tuple[dict[str, set[str]], set[str]]:
    """The roles of each measured layer's own parameters, and the layers whose output is
    the logits (the whole model's "logits", the unembedding, a tied embedding's head)."""
    from telescope.models.measure import build_on_meta
    from telescope.roles import classify, with_defaults

    roles: dict[str, set[str]] = {"logits": {"output"}}
    readout = {"logits"}
    for c in classify(build_on_meta(source, width), with_defaults(source.rules)):
        for alias in c.aliases:
            roles.setdefault(alias.rpartition(".")[0], set()).add(c.role)
            if c.role == "output":
                readout.add(alias.rpartition(".")[0])
        readout.update(alias.rpartition(".")[0] for alias, _ in c.logit_modules)
    return roles, readout


def judge_layers(
    widths: tuple[int, ...],
    sizes: Mapping[str, np.ndarray],
    roles: Mapping[str, set[str]],
    readout: set[str],
    table: Table,
    threshold: float,
) -> tuple[LayerSlope, ...]:
    """Each layer's verdict from its mean |activation| per width (rows) and step (columns):
    see the bounds above COORD_STEPS."""
    from telescope.coord.study import log_log_slope

    layers = []
    for name, arr in sizes.items():
        low = _floor(table, roles.get(name, set()), name in readout) - threshold
        slope = log_log_slope(list(widths), arr[:, -1])
        passed = bool(low <= slope <= threshold)
        layers.append(LayerSlope(name, ", ".join(sorted(roles.get(name, ()))), slope, passed, low, threshold))
    return tuple(layers)


def _floor(table: Table, roles: set[str], readout: bool) -> float:
    """The width exponent the table lets a layer's activation shrink towards by design."""
    floor = READOUT_FLOOR if readout else 0.0
    if "hidden" in roles:
        rule = table.hidden
        update = rule.lr_exponent + (0.5 if rule.optimizer == "muon" else 1.0) + rule.multiplier_exponent
        floor = min(floor, update)
    return floor


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]
