"""The user's own model as a sweep's proxies: named by a factory or a Hugging Face config.

`ModelSource` is the `[model]` section's part that names it (plain data, no torch);
`model_maker` turns the names a TrialSpec carries into `width -> nn.Module`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

CoordCheck = Literal["coord", "none"]
# "package.module:function"
FACTORY_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ModelSource:
    """`[model] factory` or `hf_config` (never both), the role rules for it, and whether a
    coord check of its proxies runs before the sweep."""

    factory: str | None = None  # "package.module:function", width -> nn.Module
    hf_config: str | None = None  # a config.json: absolute, symlinks resolved (hf.canonical_path)
    hf_config_hash: str | None = None  # telescope.models.hf.architecture_hash of it
    rules: tuple[tuple[str, str], ...] = ()  # (pattern or "<kind>", role), before FOREIGN_RULES
    check: CoordCheck = "coord"

    @property
    def hf_path(self) -> str | None:
        """The config.json's absolute path: what trials carry, so a worker elsewhere finds it."""
        return None if self.hf_config is None else os.path.abspath(os.path.expanduser(self.hf_config))

    def carried(self) -> dict[str, Any]:
        """The model as a TrialSpec and the checks' settings carry it, as their keyword arguments."""
        return {
            "model_factory": self.factory,
            "model_rules": self.rules,
            "hf_config": self.hf_path,
            "hf_config_hash": self.hf_config_hash,
        }

    @classmethod
    def carried_by(cls, carrier: Any) -> "ModelSource":
        """The model a TrialSpec or a check's settings carry (the inverse of `carried`)."""
        return cls(carrier.model_factory, carrier.hf_config, carrier.hf_config_hash, carrier.model_rules)


def model_identity(factory: str | None, hf_config: str | None, hf_config_hash: str | None) -> dict[str, Any] | None:
    """What the trial fingerprint says about the model: the factory spec, or the Hugging Face
    architecture and the hash of its config without width fields (None: the built-in proxy)."""
    if factory is not None:
        return {"factory": factory}
    if hf_config is not None:
        from telescope.models.hf import read_config

        return {"architecture": read_config(hf_config)["model_type"], "config_hash": hf_config_hash}
    return None


def model_maker(
    factory: str | None, hf_config: str | None, hf_config_hash: str | None = None
) -> tuple[Callable[[int], Any], str]:
    """(width -> nn.Module, a label for messages) for a factory spec or a Hugging Face config."""
    if factory is not None:
        from telescope.models.foreign import load_factory

        return load_factory(factory), factory
    if hf_config is None:
        raise ValueError("model_maker needs a factory or an hf_config")
    from telescope.models import hf

    return (lambda width: hf.build(hf_config, width, hf_config_hash)), f"hf_config {hf_config}"
