"""The study's three figures: tokens to reach L against batch size per optimizer (log-log),
the token ratio R_L against batch size, and the compute-time Pareto frontier."""

from __future__ import annotations

import math
from pathlib import Path

from telescope.batch_study.run import StudyResult
from telescope.files import atomic_write, cannot_write
from telescope.plotting import new_figure, readable_log_ticks

FIGURES = ("tokens-to-loss", "ratio", "pareto")


def plot_study(result: StudyResult, out_dir: str | Path) -> list[Path]:
    """Write the three PNGs into `out_dir` (created if missing); returns their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    s, (muon, adamw) = result.settings, result.settings.optimizers
    styles = {muon: ("tab:blue", "o"), adamw: ("tab:orange", "s")}
    figures = {name: _one_axes() for name in FIGURES}

    fig, ax = figures["tokens-to-loss"]
    for k, L in enumerate(result.losses):
        for opt in (muon, adamw):
            color, marker = styles[opt]
            points = [(b, sp.mean) for b, sp in result.tokens_to_loss[L][opt].items() if math.isfinite(sp.mean)]
            if points:
                ax.plot(*zip(*points), marker=marker, color=color, alpha=1.0 - 0.35 * k, label=f"{opt}, L = {L:g}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size (sequences)",
        ylabel="tokens to reach L",
        title=f"tokens to reach the loss L (width {s.width})",
    )
    readable_log_ticks(ax.yaxis)

    fig, ax = figures["ratio"]
    for k, L in enumerate(result.losses):
        points = [(b, r.mean, r.std or 0.0) for b, r in result.ratios[L].items() if math.isfinite(r.mean)]
        if points:
            b, mean, std = zip(*points)
            ax.errorbar(b, mean, yerr=std, marker="o", capsize=3, label=f"L = {L:g}")
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set(
        xscale="log",
        xlabel="batch size (sequences)",
        ylabel=f"R_L = T_{adamw} / T_{muon}",
        title="token ratio: above 1, Muon needs fewer tokens",
    )

    fig, ax = figures["pareto"]
    L = result.losses[-1] if result.losses else None
    for opt in (muon, adamw):
        color, marker = styles[opt]
        frontier = result.pareto[L][opt] if L is not None else []
        if frontier:
            ax.plot([p.devices for p in frontier], [p.time for p in frontier], marker=marker, color=color, label=opt)
            for p in frontier:
                ax.annotate(
                    f"B={p.batch_size}", (p.devices, p.time), fontsize=7, xytext=(6, 6), textcoords="offset points"
                )
    per_device = s.per_device or min(s.batch_sizes)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=f"devices ({per_device} sequences each)",
        ylabel="time to reach L (steps)",
        title=f"compute-time Pareto frontier at L = {L:g}" if L else "",
    )
    devices = sorted({p.devices for opt in (muon, adamw) for p in (result.pareto[L][opt] if L is not None else [])})
    ax.set_xticks(devices, [f"{d:g}" for d in devices])
    ax.minorticks_off()
    readable_log_ticks(ax.yaxis)
    ax.margins(x=0.12, y=0.12)  # room for the B= labels inside the axes

    for name in ("tokens-to-loss", "ratio"):  # the batch sizes themselves as ticks
        ax = figures[name][1]
        ax.set_xticks(s.batch_sizes, [str(b) for b in s.batch_sizes], rotation=45 if len(s.batch_sizes) > 6 else 0)
        ax.minorticks_off()
    paths = []
    for name, (fig, ax) in figures.items():
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = out_dir / f"{name}.png"
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
        paths.append(path)
    return paths


def _one_axes():
    fig, (ax,) = new_figure(height=4.2)
    return fig, ax
