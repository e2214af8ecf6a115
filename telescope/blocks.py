"""The residual blocks of any model and their branches, for the depth rule (docs/design.md §8).

Blocks are the layers of the model's `nn.ModuleList` of layers (transformers' `model.layers`,
nanoGPT's `transformer.h`, the proxy's `blocks`): the ModuleList of modules of one class
holding the most parameters. A block's residual branches are its children that hold
matrices (attention and MLP; the norms hold only vectors). Rules name them where this does
not fit: `(pattern, "block")` for the blocks and `(pattern, "branch")` for the branches
(e.g. Gemma's post-norms, whose outputs are what the residual adds), matched against the
full module names, as role rules are against parameter names.

The branch multiplier of a user's model is a forward hook on each branch, scaling its
output (the first element of a tuple, as attention modules return). The built-in proxy
multiplies in its own forward (telescope.proxy.model.Block).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
from torch import nn

from telescope.errors import ConfigError

BLOCK, BRANCH = "block", "branch"
MODULE_ROLES = (BLOCK, BRANCH)  # what rules may name besides parameter roles


def _patterns(rules: Sequence[Any] | None, role: str) -> list[str]:
    return [r.pattern for r in rules or () if getattr(r, "role", None) == role]


def find_blocks(model: nn.Module, rules: Sequence[Any] | None = None) -> list[tuple[str, nn.Module]]:
    """The model's residual blocks (name, module), in forward order: the modules a
    `(pattern, "block")` rule names, else the layers of its ModuleList of layers.
    ConfigError, one line, when there is none."""
    named = _patterns(rules, BLOCK)
    if named:
        found: list[tuple[str, nn.Module]] = []
        for name, module in model.named_modules():
            if any(re.fullmatch(p, name) for p in named) and not any(name.startswith(b + ".") for b, _ in found):
                found.append((name, module))
        if not found:
            raise ConfigError(f"no module of the model matches the block rule(s) {', '.join(map(repr, named))}")
        return found
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > 0 and (best is None or size > best[0]):
            best = (size, name, module)
    if best is None:
        raise ConfigError(
            "cannot find the model's residual blocks (no nn.ModuleList of layers): name them with a rule, e.g. "
            "rules=[(r'decoder\\.layer\\.\\d+', 'block'), *FOREIGN_RULES]"
        )
    _, prefix, layers = best
    return [(f"{prefix}.{i}" if prefix else str(i), block) for i, block in enumerate(layers)]


def find_branches(model: nn.Module, rules: Sequence[Any] | None = None) -> list[tuple[str, nn.Module]]:
    """The residual branches (name, module) of every block: the modules a `(pattern,
    "branch")` rule names, else each block's children that hold a matrix. ConfigError when a
    block's branches cannot be told (a bare layer among its children, or none at all)."""
    blocks = find_blocks(model, rules)
    named = _patterns(rules, BRANCH)
    if named:
        found = [
            (name, module)
            for name, module in model.named_modules()
            if any(re.fullmatch(p, name) for p in named) and any(name.startswith(b + ".") for b, _ in blocks)
        ]
        if not found:
            raise ConfigError(f"no module inside the blocks matches the branch rule(s) {', '.join(map(repr, named))}")
        return found
    found = []
    for block_name, block in blocks:
        children = [
            (f"{block_name}.{name}", child)
            for name, child in block.named_children()
            if any(p.ndim >= 2 for p in child.parameters())
        ]
        bare = [name for name, child in children if any(p.ndim >= 2 for p in child.parameters(recurse=False))]
        if bare or not children:
            what = f"its layer {bare[0]!r} is not a branch module" if bare else "no child holds a matrix"
            raise ConfigError(
                f"cannot tell the residual branches of block {block_name!r} ({what}): name them with a rule, e.g. "
                f"rules=[(r'{re.escape(block_name)}\\.(attn|mlp)', 'branch'), *FOREIGN_RULES]"
            )
        found.extend(children)
    return found


def depth_of(model: nn.Module, rules: Sequence[Any] | None = None) -> int:
    """The number of residual blocks (ConfigError when they cannot be found)."""
    return len(find_blocks(model, rules))


class BranchMultiplier:
    """Forward hook scaling a branch's output by `module.telescope_branch_multiplier`;
    registered once per module, so setting the value again replaces it (as OutputMultiplier)."""

    ATTRIBUTE = "telescope_branch_multiplier"

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        value = getattr(module, self.ATTRIBUTE, 1.0)
        if value == 1.0:
            return output
        if isinstance(output, torch.Tensor):
            return output * value
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (output[0] * value, *output[1:])
        raise ConfigError(
            f"a residual branch ({type(module).__name__}) returned a {type(output).__name__}, not a tensor: name the "
            "branch modules with (pattern, 'branch') rules"
        )


def set_branch_multiplier(model: nn.Module, value: float, rules: Sequence[Any] | None = None) -> int:
    """Scale every residual branch's output by `value` from now on; returns the number of
    blocks. Idempotent (see BranchMultiplier)."""
    for _, module in find_branches(model, rules):
        setattr(module, BranchMultiplier.ATTRIBUTE, float(value))
        if not any(isinstance(hook, BranchMultiplier) for hook in module._forward_hooks.values()):
            module.register_forward_hook(BranchMultiplier())
    return depth_of(model, rules)
