"""The depth rule on the user's model (docs/design.md §8): where it sits on the depth axis,
the branch multiplier on its residual blocks (telescope.blocks), and what an export says
about depth."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from telescope.blocks import depth_of, find_branches, set_branch_multiplier
from telescope.errors import TelescopeError
from telescope.parametrization import Depth, Table, get_table
from telescope.roles import RuleLike, as_rules


def user_depth(
    model: nn.Module, rules: Sequence[RuleLike] | None, depth_alpha: float, base_depth: int | None = None
) -> Depth:
    """The user's model on the depth axis: its blocks (telescope.blocks) against `base_depth`
    (default: as many), for the depth rule's factors. The blocks are only looked for when
    the rule is on; a model whose blocks cannot be found is then a ConfigError."""
    if depth_alpha <= 0:
        return Depth()
    depth = depth_of(model, as_rules(rules))
    return Depth(depth, base_depth or depth, depth_alpha)


def apply_depth(
    model: nn.Module,
    table: str | Table,
    depth_alpha: float,
    base_depth: int | None = None,
    rules: Sequence[RuleLike] | None = None,
) -> Depth:
    """Put the depth rule's branch multiplier on the model's residual branches (nothing when
    `depth_alpha` is 0); returns where the model sits on the depth axis."""
    depth = user_depth(model, rules, depth_alpha, base_depth)
    if depth.on:
        set_branch_multiplier(
            model, (get_table(table) if isinstance(table, str) else table).branch_multiplier(depth), as_rules(rules)
        )
    return depth


def export_depth(
    payload: Mapping[str, Any], model: nn.Module, rules: Sequence[RuleLike] | None
) -> tuple[float, int | None, int | None]:
    """(alpha, proxy depth, target depth) of an export, checked against `model`: with the
    depth rule on, the model's blocks must be found and number the export's target depth."""
    alpha = float((payload["fingerprint"].get("depth") or {}).get("alpha", 0.0))
    proxy_depth, target_depth = payload.get("proxy_depth"), payload.get("target_depth")
    if alpha > 0:
        depth = depth_of(model, as_rules(rules))
        if target_depth is not None and depth != target_depth:
            raise TelescopeError(
                f"model depth {depth} (its residual blocks) differs from the export's target depth {target_depth}; "
                f"export for yours: telescope export {payload.get('sweep', 'SWEEP')} --target-depth {depth}"
            )
    return alpha, proxy_depth, target_depth


def check_user_blocks(source: Any, width: int, depth_alpha: float) -> None:
    """With the depth rule on, the user's model (a telescope.models.ModelSource) must show
    its residual blocks and their branches, or name them with rules: a ConfigError, one
    line, before anything is written."""
    if depth_alpha <= 0:
        return
    from telescope.models.measure import build_on_meta
    from telescope.roles import with_defaults

    find_branches(build_on_meta(source, width), with_defaults(source.rules))
