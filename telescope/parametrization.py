"""Parametrizations as data: per-role tables, their fingerprint, and the transfer to a width.

Every parameter has a role (docs/design.md §2): `embedding`, `hidden`, `output` or `vector`.
A table gives, per role and as a function of the width multiplier m = width / base_width,
the forward multiplier, the init std, the optimizer, the learning-rate factor and whether
weight decay applies. Factors are power laws m**exponent, so a table is a handful of
numbers that can be printed, stored and compared.

One base learning rate eta0 means the same for every role because Muon's update is
scaled to AdamW's RMS (torch's adjust_lr_fn="match_rms_adamw"): a group's LR is
eta0 * m**lr_exponent (times muon_lr_ratio for Muon groups).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from telescope.errors import ConfigError
from telescope.spec import Recipe

Role = Literal["embedding", "hidden", "output", "vector"]
ROLES: tuple[Role, ...] = ("embedding", "hidden", "output", "vector")

# Optimizer settings shared by every table (docs/design.md §2); part of the fingerprint. The
# recipe a sweep may set ([train] grad_clip, AdamW betas and eps, Muon momentum and
# Nesterov: telescope.spec.Recipe) is in the fingerprint too.
MUON_VARIANT = "telescope.optim.muon.Muon"  # batched NS, numerically torch.optim.Muon
NS_STEPS = 5
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
LR_ADJUST = "match_rms_adamw"


@dataclass(frozen=True)
class Init:
    """How a role's weights start: std = scale / sqrt(fan_in) ("fan_in"), std = scale *
    m**exponent ("constant"), all zeros ("zero") or all ones ("ones", for norm gains)."""

    kind: Literal["fan_in", "constant", "zero", "ones"]
    scale: float = 1.0
    exponent: float = 0.0

    def std(self, m: float, fan_in: int) -> float:
        if self.kind == "fan_in":
            return self.scale / math.sqrt(fan_in)
        if self.kind == "constant":
            return self.scale * m**self.exponent
        return 0.0  # zero and ones are deterministic


@dataclass(frozen=True)
class RoleRule:
    """One row of a table: the role's optimizer, init, and width exponents."""

    optimizer: Literal["muon", "adamw"]
    init: Init
    lr_exponent: float = 0.0  # LR factor = m ** lr_exponent
    multiplier_exponent: float = 0.0  # forward multiplier = m ** multiplier_exponent
    weight_decay: bool = True

    def lr_factor(self, m: float) -> float:
        return m**self.lr_exponent

    def multiplier(self, m: float) -> float:
        return m**self.multiplier_exponent


@dataclass(frozen=True)
class Depth:
    """Where a model sits on the depth axis: `depth` residual blocks, base values tuned at
    `base` blocks (the proxy's depth), and the branch exponent `alpha` of `[model]
    depth_alpha`: 0 turns the depth rule off, 0.5 is depth-muP, 1 is CompleteP."""

    depth: int = 1
    base: int = 1
    alpha: float = 0.0

    @property
    def ratio(self) -> float:
        return self.depth / self.base

    @property
    def on(self) -> bool:
        return self.alpha > 0


NO_DEPTH = Depth()


@dataclass(frozen=True)
class DepthPower:
    """A depth factor (L / L_base) ** (constant + per_alpha * alpha); 1 when the rule is off."""

    constant: float = 0.0
    per_alpha: float = 0.0

    def exponent(self, alpha: float) -> float:
        return self.constant + self.per_alpha * alpha

    def factor(self, depth: Depth) -> float:
        return depth.ratio ** self.exponent(depth.alpha) if depth.on else 1.0


@dataclass(frozen=True)
class DepthFactors:
    """What the depth rule does to one role's parameters inside residual blocks: its
    learning rate, weight decay and (AdamW) epsilon, each a DepthPower."""

    lr: DepthPower = DepthPower()
    weight_decay: DepthPower = DepthPower()
    eps: DepthPower = DepthPower()

    def at(self, depth: Depth) -> tuple[float, float, float]:
        """(lr, weight decay, eps) factors at `depth`."""
        return self.lr.factor(depth), self.weight_decay.factor(depth), self.eps.factor(depth)


@dataclass(frozen=True)
class DepthRule:
    """A table's depth rule (docs/design.md §8): every residual branch (attention and MLP
    output) is multiplied by `branch`, (L_base / L) ** alpha, and the parameters inside the
    blocks get their role's DepthFactors. Parameters outside the blocks (embedding,
    unembedding, final norm) get none, and neither do `embedding` and `output` roles."""

    branch: DepthPower = DepthPower(0.0, -1.0)
    hidden: DepthFactors = DepthFactors()
    vector: DepthFactors = DepthFactors()

    def factors(self, role: Role, in_block: bool, depth: Depth) -> tuple[float, float, float]:
        """(lr, weight decay, eps) factors of a `role` parameter at `depth`."""
        if not in_block or role not in ("hidden", "vector"):
            return 1.0, 1.0, 1.0
        return getattr(self, role).at(depth)


# CompleteP (arXiv 2505.01618, Table 1, and its reference implementation in nanoGPT-mup's
# `completep` branch) for AdamW, with m_L = L / L_base: hidden matrices LR m_L^(alpha - 1),
# norm gains and biases inside blocks LR m_L^(alpha - 1), AdamW epsilon m_L^(-alpha);
# embedding, unembedding and final norm unchanged. Its weight decay has no depth factor
# (the reference scales it with width only): DepthPower() below, kept as data.
_ADAMW_DEPTH = DepthFactors(lr=DepthPower(-1.0, 1.0), eps=DepthPower(0.0, -1.0))
# Muon's hidden LR under depth: no published rule. The default is CompleteP's LR rule
# (Muon's update, like Adam's, has a size set by the LR alone); benchmarks/depth_transfer.py
# measures it, and this field is where a measured rule goes.
MUON_DEPTH_LR = DepthPower(-1.0, 1.0)
_MUON_DEPTH = DepthRule(hidden=DepthFactors(lr=MUON_DEPTH_LR), vector=_ADAMW_DEPTH)
_ADAMW_DEPTH_RULE = DepthRule(hidden=_ADAMW_DEPTH, vector=_ADAMW_DEPTH)


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    embedding: RoleRule
    hidden: RoleRule
    output: RoleRule
    vector: RoleRule
    default_lr: float  # suggested eta0, measured at width 64 (see default_lr notes below)
    depth: DepthRule = field(default=_MUON_DEPTH)

    def rule(self, role: Role) -> RoleRule:
        return getattr(self, role)

    def branch_multiplier(self, depth: Depth) -> float:
        """The forward multiplier on every residual branch at `depth`."""
        return self.depth.branch.factor(depth)

    def init_std(self, role: Role, m: float, fan_in: int, base_width: int, tied_readout: bool = False) -> float:
        """The init std of a `role` weight at multiplier m. An embedding tied to the
        unembedding is also the readout: std 1 would start the logits at O(sqrt(width)), so
        its std is divided by sqrt(base_width) (still constant in width, as muP asks of
        input weights) and the logits start at O(1) at the base width."""
        std = self.rule(role).init.std(m, fan_in)
        return std / math.sqrt(base_width) if role == "embedding" and tied_readout else std


_EMBEDDING = RoleRule("adamw", Init("constant", 1.0))
_VECTOR = RoleRule("adamw", Init("ones"), weight_decay=False)
_MUP_OUTPUT = RoleRule("adamw", Init("zero"), multiplier_exponent=-1.0)

# default_lr: the eta0 with the lowest validation loss in a sqrt(2)-step LR scan of
# `telescope trial --width 64 --steps 300` (depth 2, head_dim 32, 16x64 bytes, stdlib corpus,
# no weight decay). Val loss (nats/byte) at 0.012/0.017/0.024/0.034/0.048:
# paper 1.791/1.758/1.753/1.732/1.733; adamw 2.007/-/1.932/1.981/2.256; sp 1.816/-/1.768/-/1.763.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            name="paper",
            description="arXiv 2505.02222 table, Tensor Programs V multiplier form: Muon hidden LR 1/m",
            embedding=_EMBEDDING,
            hidden=RoleRule("muon", Init("fan_in"), lr_exponent=-1.0),
            output=_MUP_OUTPUT,
            vector=_VECTOR,
            default_lr=0.034,
        ),
        Table(
            name="muon",
            description="spectral muP: as paper, but Muon hidden LR 1/sqrt(m)",
            embedding=_EMBEDDING,
            hidden=RoleRule("muon", Init("fan_in"), lr_exponent=-0.5),
            output=_MUP_OUTPUT,
            vector=_VECTOR,
            default_lr=0.034,  # equal to paper's: the tables coincide at m = 1
        ),
        Table(
            name="adamw",
            description="muP for AdamW everywhere (hidden LR 1/m), a baseline",
            embedding=_EMBEDDING,
            hidden=RoleRule("adamw", Init("fan_in"), lr_exponent=-1.0),
            output=_MUP_OUTPUT,
            vector=_VECTOR,
            default_lr=0.024,
            depth=_ADAMW_DEPTH_RULE,
        ),
        Table(
            name="sp",
            description="standard parametrization: no width factors, output init 1/sqrt(fan_in)",
            embedding=_EMBEDDING,
            hidden=RoleRule("muon", Init("fan_in")),
            output=RoleRule("adamw", Init("fan_in")),
            vector=_VECTOR,
            default_lr=0.048,
        ),
    )
}
DEFAULT_PARAMETRIZATION = DEFAULT_TABLE = "paper"


def get_table(name: str) -> Table:
    """The table registered under `name`; ConfigError naming the choices otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(f"unknown parametrization {name!r}; choose one of {', '.join(TABLES)}") from None


def width_multiplier(width: int, base_width: int) -> float:
    if width <= 0 or base_width <= 0:
        raise ConfigError(f"width and base_width must be positive, got {width} and {base_width}")
    return width / base_width


# The depth rule a [depths] sweep and the checks across depth use when none is given:
# CompleteP's, the one that transferred with Muon at the lowest loss (README "Depth", measured).
DEFAULT_DEPTH_ALPHA = 1.0


def check_depth_alpha(alpha: float, where: str = "model.depth_alpha") -> float:
    """`alpha` if it is in [0, 1]; else a ConfigError naming `where`."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"{where}: must be in [0, 1] (0 off, 0.5 depth-muP, 1 CompleteP), got {alpha}")
    return float(alpha)


def fingerprint(
    table: str | Table,
    muon_lr_ratio: float = 1.0,
    recipe: Recipe = Recipe(),
    model: dict[str, Any] | None = None,
    depth_alpha: float = 0.0,
) -> dict[str, Any]:
    """What must be identical between the proxies and the target for a transfer to hold:
    the table, the optimizers and their recipe, (for a user's model) which model, and, when
    the depth rule is on (`depth_alpha` > 0), alpha and the table's depth rule."""
    t = get_table(table) if isinstance(table, str) else table
    named = {"model": model} if model is not None else {}
    if depth_alpha > 0:
        named["depth"] = {"alpha": depth_alpha, **asdict(t.depth)}
    return named | {
        "table": t.name,
        "roles": {role: asdict(t.rule(role)) for role in ROLES},
        "muon_variant": MUON_VARIANT,
        "lr_adjust": LR_ADJUST,
        "muon_momentum": recipe.muon_momentum,
        "muon_nesterov": recipe.muon_nesterov,
        "ns_steps": NS_STEPS,
        "ns_coefficients": list(NS_COEFFICIENTS),
        "adamw_betas": list(recipe.adamw_betas),
        "adamw_eps": recipe.adamw_eps,
        "grad_clip": recipe.grad_clip,
        "torch": _torch_version(),
        "muon_lr_ratio": muon_lr_ratio,
    }


def _torch_version() -> str:
    import torch  # only the fingerprint needs it: the tables themselves are plain data

    return str(torch.__version__)


def check_same_fingerprint(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Refuse a transfer between runs whose fingerprints differ (keys in `ignore` excepted,
    e.g. "muon_lr_ratio" when it is swept)."""
    keys = (set(a) | set(b)) - set(ignore)
    differing = sorted(k for k in keys if a.get(k) != b.get(k))
    if differing:
        details = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in differing)
        raise ConfigError(f"cannot transfer between different parametrizations ({details})")


@dataclass(frozen=True)
class GroupHyperparams:
    """Absolute hyperparameters of one parameter group at one width and depth (what export
    prints). The depth factors are those of the table's depth rule, already in `lr`,
    `weight_decay` and `eps`; `in_block` is None when the depth rule is off."""

    role: Role
    params: tuple[str, ...]  # parameter names, layer index written as '*'
    optimizer: str
    lr: float
    weight_decay: float
    init: str  # "normal", "zero" or "ones"
    init_std: float
    multiplier: float
    fan_in: int
    eps: float | None = None  # AdamW's epsilon (None for Muon)
    in_block: bool | None = None  # inside a residual block (the depth rule applies)
    lr_depth: float = 1.0
    weight_decay_depth: float = 1.0
    eps_depth: float = 1.0


def group_lr(rule: RoleRule, m: float, lr: float, muon_lr_ratio: float) -> float:
    """Absolute peak LR of a role at multiplier m: eta0 * factor (* ratio for Muon)."""
    ratio = muon_lr_ratio if rule.optimizer == "muon" else 1.0
    return lr * rule.lr_factor(m) * ratio


def in_blocks(names: Sequence[str], blocks: Sequence[str]) -> bool:
    """Whether a parameter reached under `names` lies inside one of the `blocks` (module names)."""
    return any(name.startswith(block + ".") for name in names for block in blocks)


def transfer(
    table: str | Table,
    lr: float,
    weight_decay: float,
    base_width: int,
    width: int,
    parameters: Sequence[Any],
    muon_lr_ratio: float = 1.0,
    depth: Depth = NO_DEPTH,
    blocks: Sequence[str] = (),
    adamw_eps: float = Recipe.adamw_eps,
) -> list[GroupHyperparams]:
    """The parameter groups of a model at `width` and `depth`, with the absolute LR, weight
    decay, epsilon, init std and forward multiplier the table gives from the base values
    eta0 = `lr` and lambda = `weight_decay` tuned at `base_width` (and at `depth.base`
    blocks). `parameters` are the model's classified parameters (rows with `name`, `role`
    and `fan_in`, e.g. telescope.roles.classify or telescope.proxy.model.parameter_roles);
    `blocks` the names of its residual blocks (telescope.blocks.find_blocks), needed when the
    depth rule is on. A group is one (role, fan-in, init, depth factors) and lists its
    parameter names with layer indices written as '*'."""
    t = get_table(table) if isinstance(table, str) else table
    m = width_multiplier(width, base_width)
    groups: dict[tuple, list[str]] = {}
    for row in parameters:
        generic = ".".join("*" if part.isdigit() else part for part in row.name.split("."))
        tied = bool(getattr(row, "logit_modules", ())) and row.role == "embedding"
        inside = in_blocks(getattr(row, "aliases", (row.name,)), blocks) if depth.on else None
        key = (row.role, row.fan_in, t.rule(row.role).init.kind, tied, inside)
        names = groups.setdefault(key, [])
        if generic not in names:
            names.append(generic)
    rows = []
    for (role, fan_in, init_kind, tied, inside), names in groups.items():
        rule = t.rule(role)
        lr_depth, wd_depth, eps_depth = t.depth.factors(role, bool(inside), depth)
        rows.append(
            GroupHyperparams(
                role=role,
                params=tuple(names),
                optimizer=rule.optimizer,
                lr=group_lr(rule, m, lr, muon_lr_ratio) * lr_depth,
                weight_decay=weight_decay * wd_depth if rule.weight_decay else 0.0,
                init={"fan_in": "normal", "constant": "normal"}.get(init_kind, init_kind),
                init_std=t.init_std(role, m, fan_in, base_width, tied),
                multiplier=rule.multiplier(m),
                fan_in=fan_in,
                eps=adamw_eps * eps_depth if rule.optimizer == "adamw" else None,
                in_block=inside,
                lr_depth=lr_depth,
                weight_decay_depth=wd_depth,
                eps_depth=eps_depth if rule.optimizer == "adamw" else 1.0,
            )
        )
    return rows
