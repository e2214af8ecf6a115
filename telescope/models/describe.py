"""What a model is, besides its width, in terms that move the optimum: head dim, QK-norm,
MLP form, tying, vocabulary, experts and depth. One description for the built-in proxy
and any user model, so an export can say what it was measured on and `parametrize` /
`optimizers_from_export` can say when the model they are given is another one."""

from __future__ import annotations

import re
import sys
from typing import Any, Mapping, Sequence

from torch import nn

from telescope.errors import TelescopeError
from telescope.roles import RuleLike, classify

_QK_NORM = re.compile(r"(^|.*\.)(q|k|query|key)_?(norm|layernorm|ln)\.weight")
_GATE = re.compile(r"(^|.*\.)(gate|gate_proj|gate_up_proj|w1|w3|wi_0|c_fc2)(\.weight)?")
_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


def describe(model: nn.Module, rules: Sequence[RuleLike] | None = None) -> dict[str, Any]:
    """The model's architecture apart from its width (None where it does not show)."""
    classified = classify(model, rules)
    names = [alias for c in classified for alias in c.aliases]
    readout = [c for c in classified if c.role == "output" or (c.role == "embedding" and c.logit_modules)]
    experts = [c.shape[0] for c in classified if len(c.shape) == 3]
    head_dims = {m.head_dim for m in model.modules() if isinstance(getattr(m, "head_dim", None), int)}
    blocks = {int(m.group(1)) for n in names if (m := _BLOCK_INDEX.search(n))}
    return {
        "head_dim": head_dims.pop() if len(head_dims) == 1 else None,
        "qk_norm": any(_QK_NORM.fullmatch(n) for n in names),
        "gated_mlp": any(_GATE.fullmatch(n) for n in names),
        "tied_embeddings": any(c.role == "embedding" and c.logit_modules for c in classified),
        "vocab_size": readout[0].shape[0] if readout else None,
        "experts": max(experts) if experts else 0,
        "depth": max(blocks) + 1 if blocks else None,
    }


def differences(model: Mapping[str, Any], proxies: Mapping[str, Any]) -> list[str]:
    """`key: model's vs proxies'` for each property both show and that differs."""
    return [
        f"{key} {model[key]} vs {proxies[key]}"
        for key in proxies
        if model.get(key) is not None and proxies[key] is not None and model.get(key) != proxies[key]
    ]


def check_measured_on(
    model: nn.Module, payload: Mapping[str, Any], rules: Sequence[RuleLike] | None, strict: bool
) -> None:
    """One warning line on stderr (a TelescopeError when `strict`) when `model` differs from
    the proxies the export was measured on in anything but width."""
    proxies = (payload.get("measured_on") or {}).get("model")
    if not proxies:
        return  # an export from before telescope recorded it
    if payload.get("target_depth") is not None:  # exported for that depth: the target may be deeper
        proxies = {**proxies, "depth": payload["target_depth"]}
    found = differences(describe(model, rules), proxies)
    if not found:
        return
    line = (
        f"this model differs from the proxies the export {payload.get('sweep', '')!r} was measured on "
        f"({'; '.join(found)}): its learning rates may not transfer; sweep proxies of this model"
    )
    if strict:
        raise TelescopeError(line)
    print(f"telescope: warning: {line}", file=sys.stderr)
