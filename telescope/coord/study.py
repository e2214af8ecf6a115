"""Coord check: does every layer's activation size stay constant as the proxy widens (or
deepens)?

Each width trains `steps` steps on real data at a constant LR. After every step (and at
init) a fixed probe batch goes through the model and forward hooks record the mean
|output| of every layer, logits included (after their multipliers). Per layer the slope of
log(size) against log(width) at the last step is the verdict: |slope| <= threshold passes;
a user's model's layers pass within bounds of their own (telescope.coord.model_check:
down to the shrinking its parametrization designs for them, up to +threshold).
The slope of each layer's change since init, mean |out_t - out_0|, is reported without a
verdict (under `paper`'s 1/m hidden LR it is negative by design).

Across depths (`depths`, at one width) the layers are the embedding, the last block's
attention and MLP outputs (before the branch multiplier), the residual stream leaving the
last block and the logits, and the slope is against log(depth): without the depth rule the
residual stream grows with depth; with CompleteP's (alpha = 1) it does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from telescope.coord.verdict import LayerSlope
from telescope.data import load_data
from telescope.errors import ConfigError
from telescope.files import atomic_write
from telescope.models.packing import logits_of
from telescope.optim.groups import build_optimizers
from telescope.parametrization import get_table
from telescope.proxy.model import Transformer, build_model
from telescope.roles import with_defaults
from telescope.spec import ModelShape
from telescope.training.train import loss_fn

DEFAULT_LR = 0.01


@dataclass(frozen=True)
class CoordCheckSettings:
    parametrization: str = "paper"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    steps: int = 10
    # A moderate LR: update sizes comparable to the calibration in docs/design.md §2 (Muon 0.02 "original",
    # AdamW 3e-3). At a table's tuned LR (~0.03) the first updates of the narrowest width
    # rival its init, and `paper`'s 1/m hidden LR then shows up as a negative slope.
    lr: float = DEFAULT_LR
    threshold: float = 0.25
    shape: ModelShape = field(default_factory=ModelShape)
    batch_size: int = 8
    data: str = "stdlib"
    seed: int = 0
    seeds: int = 1  # activation sizes are averaged over seeds seed, seed + 1, ... before the fit
    model_factory: str | None = None  # "package.module:factory": check the user's model, not the proxy
    model_rules: tuple[tuple[str, str], ...] = ()  # its role rules, before FOREIGN_RULES
    hf_config: str | None = None  # or a Hugging Face config.json to build it from (telescope.models.hf)
    hf_config_hash: str | None = None
    # Check across these depths (increasing) at the width widths[0] instead, the first the
    # base depth; the depth rule's alpha is shape.depth_alpha. Built-in proxy only.
    depths: tuple[int, ...] = ()

    @property
    def axis(self) -> str:
        return "depth" if self.depths else "width"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The values along the checked axis: the depths, or the widths."""
        return self.depths or self.widths


@dataclass(frozen=True)
class LayerVerdict(LayerSlope):
    """A layer's slope (d log(mean |activation|) / d log(width) at the last step) and its
    verdict, with `change_slope`: the same for mean |activation - activation at init|."""

    change_slope: float = math.nan


@dataclass
class CoordCheckResult:
    settings: CoordCheckSettings
    lr: float
    layers: list[LayerVerdict]
    sizes: dict[str, np.ndarray]  # layer -> (widths, steps + 1) mean |activation|
    changes: dict[str, np.ndarray]  # layer -> (widths, steps + 1) mean |change since init|
    final_losses: list[float]  # train loss of the last step, per width

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.layers)


def layer_modules(model: Transformer) -> dict[str, torch.nn.Module]:
    """The layers whose outputs are measured, in forward order."""
    layers: dict[str, torch.nn.Module] = {"embedding": model.embed}
    for i, block in enumerate(model.blocks):
        layers[f"block{i}.attn"] = block.attn
        layers[f"block{i}.mlp"] = block.mlp
        layers[f"block{i}.residual"] = block
    layers["logits"] = model.lm_head
    return layers


def depth_layer_modules(model: Transformer) -> dict[str, torch.nn.Module]:
    """The layers measured across depths: the same five at every depth."""
    last = model.blocks[-1]
    return {
        "embedding": model.embed,
        "last.attn": last.attn,
        "last.mlp": last.mlp,
        "residual": last,
        "logits": model.lm_head,
    }


def foreign_layer_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """For a user's model: every module that owns a parameter (by name, in registration
    order), then the whole model as "logits" (its output, the output multiplier applied)."""
    layers: dict[str, torch.nn.Module] = {}
    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            layers[name] = module
    layers["logits"] = model
    return layers


def build_checked_model(settings: CoordCheckSettings, width: int, base_width: int, lr: float, depth: int | None = None):
    """(model, optimizers, measured layers) at `width` (and `depth` blocks, across depths):
    the proxy, or the user's model parametrized per the same table, with the proxy's
    optimizers (weight decay 0)."""
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.model_factory is None and settings.hf_config is None:
        shape = replace(settings.shape, depth=depth) if depth is not None else settings.shape
        base_depth = settings.depths[0] if depth is not None else None
        model = build_model(shape, width, base_width, settings.parametrization, generator, base_depth)
        optimizers = build_optimizers(model, settings.parametrization, lr, 0.0, width, base_width, depth=model.depth)
        layers = depth_layer_modules(model) if depth is not None else layer_modules(model)
        return model, optimizers, layers
    from telescope.models import model_maker
    from telescope.models.foreign import build_foreign_optimizers, build_user_model

    rules = with_defaults(settings.model_rules)
    maker, label = model_maker(settings.model_factory, settings.hf_config, settings.hf_config_hash)
    model = build_user_model(
        maker, settings.parametrization, width, base_width, settings.seed, rules, label, settings.shape.depth_alpha
    )
    optimizers = build_foreign_optimizers(model, settings.parametrization, lr, 0.0, width, base_width, rules=rules)
    return model, optimizers, foreign_layer_modules(model)


def _first_tensor(out) -> torch.Tensor | None:
    """A module's output tensor (the first one when it returns a tuple, as attention does)."""
    out = logits_of(out)  # a Hugging Face ModelOutput: its logits
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


def log_log_slope(widths: list[int], values: np.ndarray) -> float:
    """Least-squares slope of log(values) against log(widths); NaN if any value is <= 0."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any(values <= 0):
        return float("nan")
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def _check(settings: CoordCheckSettings) -> None:
    if settings.depths:
        ds = settings.depths
        if len(ds) < 2 or ds[0] < 1 or any(b <= a for a, b in zip(ds, ds[1:])):
            raise ConfigError(f"--depths needs at least two positive, strictly increasing depths, got {list(ds)}")
        if settings.model_factory is not None or settings.hf_config is not None:
            raise ConfigError("--depths checks the built-in proxy; your model's factory decides its own depth")
    elif len(settings.widths) < 2 or len(set(settings.widths)) != len(settings.widths):
        raise ConfigError(f"--widths needs at least two distinct widths, got {settings.widths}")
    if settings.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {settings.seeds}")
    if settings.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {settings.steps}")
    if settings.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {settings.lr}")
    if settings.threshold <= 0:
        raise ConfigError(f"--threshold must be > 0, got {settings.threshold}")


def _probe_width(settings: CoordCheckSettings, width: int, base_width: int, lr: float, data, depth: int | None = None):
    """(sizes, changes, final loss) for one width (and depth); sizes/changes are {layer: (steps+1,)}."""
    B, T = settings.batch_size, settings.shape.seq_len
    model, optimizers, layers = build_checked_model(settings, width, base_width, lr, depth)
    probe_inputs, _ = data.val_batches(1, B, T)[0]
    if settings.model_factory is not None or settings.hf_config is not None:
        from telescope.coord.model_check import check_forward

        check_forward(model, probe_inputs, data.vocab_size, settings.model_factory or settings.hf_config, settings.data)

    outputs: dict[str, torch.Tensor] = {}

    def record(name: str, out) -> None:
        tensor = _first_tensor(out)
        if tensor is not None:
            outputs[name] = tensor.detach()

    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, module in layers.items()
    ]
    sizes: dict[str, list[float]] = {name: [] for name in layers}
    changes: dict[str, list[float]] = {name: [] for name in layers}
    initial: dict[str, torch.Tensor] = {}

    def probe() -> None:
        with torch.no_grad():
            model(probe_inputs)
        for name, out in outputs.items():
            initial.setdefault(name, out)
            sizes[name].append(out.abs().mean().item())
            changes[name].append((out - initial[name]).abs().mean().item())

    try:
        probe()
        loss = float("nan")
        for step in range(settings.steps):
            inputs, targets = data.train_batch(step, B, T, settings.seed)
            loss_value = loss_fn(model, inputs, targets)
            loss_value.backward()
            optimizers.step()
            optimizers.zero_grad()
            loss = loss_value.item()
            probe()
    finally:
        for hook in hooks:
            hook.remove()
    measured = [name for name, values in sizes.items() if values]  # a module never called has no output
    return {n: sizes[n] for n in measured}, {n: changes[n] for n in measured}, loss


def coord_check(settings: CoordCheckSettings) -> CoordCheckResult:
    """Train every width (or depth) `settings.steps` steps and judge each layer's scaling."""
    _check(settings)
    get_table(settings.parametrization)
    lr = settings.lr
    widths = sorted(settings.sizes)
    data = load_data(settings.data)
    sizes: dict[str, list[list[float]]] = {}
    changes: dict[str, list[list[float]]] = {}
    final_losses = []
    for size in widths:
        width, depth = (settings.widths[0], size) if settings.depths else (size, None)
        runs = [
            _probe_width(
                replace(settings, seed=settings.seed + i), width, width if depth else widths[0], lr, data, depth
            )
            for i in range(settings.seeds)
        ]
        for name in runs[0][0]:
            sizes.setdefault(name, []).append(np.mean([s[name] for s, _, _ in runs], axis=0))
            changes.setdefault(name, []).append(np.mean([c[name] for _, c, _ in runs], axis=0))
        final_losses.append(float(np.mean([loss for _, _, loss in runs])))
    size_arrays = {name: np.array(v) for name, v in sizes.items()}
    change_arrays = {name: np.array(v) for name, v in changes.items()}
    if settings.model_factory is None and settings.hf_config is None:
        judged = [
            _symmetric(name, log_log_slope(widths, arr[:, -1]), settings.threshold) for name, arr in size_arrays.items()
        ]
    else:  # within the bounds the table designs for each layer
        from telescope.coord.model_check import judge_user_layers

        judged = judge_user_layers(settings, tuple(widths), size_arrays)
    layers = [
        LayerVerdict(**asdict(v), change_slope=log_log_slope(widths, change_arrays[v.layer][:, -1])) for v in judged
    ]
    return CoordCheckResult(
        settings=settings,
        lr=lr,
        layers=layers,
        sizes=size_arrays,
        changes=change_arrays,
        final_losses=final_losses,
    )


def _symmetric(layer: str, slope: float, threshold: float) -> LayerSlope:
    return LayerSlope(layer, "", slope, bool(abs(slope) <= threshold), -threshold, threshold)


def plot_coord_check(result: CoordCheckResult, path: str) -> None:
    """One panel per layer: mean |activation| against width, one line per step (log width;
    log values unless they span less than telescope.plotting.NARROW_RATIO, then a linear
    axis from 0, where a narrow range reads as the flat line it is)."""
    from matplotlib import colormaps

    from telescope.plotting import fitting_scale, new_figure, wrapped

    widths = sorted(result.settings.sizes)
    n = len(result.layers)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = new_figure(cols, rows, width=3.2, height=2.9)
    cmap = colormaps["viridis"]
    steps = result.settings.steps
    for ax, verdict in zip(axes, result.layers):
        arr = result.sizes[verdict.layer]
        for t in range(arr.shape[1]):
            ax.plot(widths, arr[:, t], color=cmap(t / max(1, steps)), marker=".", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
        scale = fitting_scale(arr.ravel().tolist())
        ax.set_yscale(scale)
        if scale == "linear":  # from 0: a flat line reads flat, not as a jump of 0.1%
            ax.set_ylim(0.0, float(arr.max()) * 1.1 or 1.0)
        mark = "PASS" if verdict.passed else "FAIL"
        ax.set_title(wrapped(verdict.layer, 34) + f"\nslope {verdict.slope:+.2f} {mark}", fontsize=8)
        ax.set_xlabel(result.settings.axis, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[n:]:
        ax.axis("off")
    alpha = f", depth_alpha {result.settings.shape.depth_alpha:g}" if result.settings.depths else ""
    fig.suptitle(
        f"coord check: {result.settings.parametrization}{alpha}, lr {result.lr:g}, steps 0..{steps} (dark to light)",
        fontsize=9,
    )
    with atomic_write(path) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=110)
