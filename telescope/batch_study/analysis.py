"""The batch-size study's numbers, from loss curves alone (pure; arXiv 2505.02222 §2).

For a target training loss L and a batch size B (tokens per step):
- T_L(B): tokens a run needs to reach L (Eq. 1): the first point where the smoothed
  training loss is at or below L, interpolated linearly in tokens; +inf if it never is.
- R_L(B) = T_L,AdamW(B) / T_L,Muon(B) (Eq. 2): above 1, Muon needs fewer tokens.
- B_tok,L = max{B : T_L(B) = min_B T_L(B)} (Eq. 6): the largest token-optimal batch size.
- The compute-time Pareto frontier: with `per_device` sequences per device and a fixed
  time per step, batch size B (sequences of `seq_len` tokens) runs on D = B / per_device
  devices and reaches L after T_L(B) / (B * seq_len) steps; a point (D, time) is on the
  frontier when no other uses no more devices and no more time.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

DEFAULT_SMOOTHING = 10  # steps in the running mean of the training loss


def smoothed(losses: Sequence[float], window: int = DEFAULT_SMOOTHING) -> list[float]:
    """Running mean over the last `window` points (fewer at the start); non-finite stays."""
    out, total, queue = [], 0.0, []
    for value in losses:
        if not math.isfinite(value):
            out.append(math.inf)
            continue
        queue.append(value)
        total += value
        if len(queue) > window:
            total -= queue.pop(0)
        out.append(total / len(queue))
    return out


def tokens_to_loss(
    tokens: Sequence[float], losses: Sequence[float], target: float, window: int = DEFAULT_SMOOTHING
) -> float:
    """T_L: tokens until the smoothed loss first reaches `target` (interpolated), +inf if never."""
    if len(tokens) != len(losses):
        raise ValueError(f"{len(tokens)} token counts but {len(losses)} losses")
    curve = smoothed(losses, window)
    for i, loss in enumerate(curve):
        if loss <= target:
            if i == 0 or not math.isfinite(curve[i - 1]):
                return float(tokens[i])
            before, t0 = curve[i - 1], tokens[i - 1]
            return t0 + (tokens[i] - t0) * (before - target) / (before - loss)
    return math.inf


def ratio(t_adamw: float, t_muon: float) -> float:
    """R_L = T_AdamW / T_Muon; +inf when only Muon reaches L, NaN when neither does."""
    if math.isinf(t_muon):
        return math.nan
    return t_adamw / t_muon


def token_optimal_batch(t_by_batch: Mapping[int, float]) -> int | None:
    """B_tok,L = the largest B whose T_L(B) equals the smallest; None if no B reaches L."""
    finite = {b: t for b, t in t_by_batch.items() if math.isfinite(t)}
    if not finite:
        return None
    best = min(finite.values())
    return max(b for b, t in finite.items() if t == best)


@dataclass(frozen=True)
class ParetoPoint:
    batch_size: int
    devices: float
    time: float  # steps to reach L: time in units of one step


def pareto_frontier(t_by_batch: Mapping[int, float], per_device: int, seq_len: int = 1) -> list[ParetoPoint]:
    """The (devices, steps-to-L) points no other point beats on both, by device count."""
    if per_device < 1:
        raise ValueError(f"per_device must be >= 1, got {per_device}")
    points = [
        ParetoPoint(b, b / per_device, t / (b * seq_len)) for b, t in sorted(t_by_batch.items()) if math.isfinite(t)
    ]
    frontier: list[ParetoPoint] = []
    for point in sorted(points, key=lambda p: (p.devices, p.time)):
        if not frontier or point.time < frontier[-1].time:
            frontier.append(point)
    return frontier


@dataclass(frozen=True)
class Spread:
    """A statistic over seeds: its mean and (with two or more seeds) standard deviation."""

    mean: float
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if any(math.isnan(v) for v in values) or not values:
            return cls(math.nan, None)
        if any(math.isinf(v) for v in values):
            return cls(math.inf if all(v > 0 for v in values) else math.nan, None)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def ratio_over_seeds(t_adamw: Sequence[float], t_muon: Sequence[float]) -> Spread:
    """R_L with its spread: the ratio seed by seed (seed k of AdamW over seed k of Muon)."""
    return Spread.of([ratio(a, m) for a, m in zip(t_adamw, t_muon)])
