"""Picklable stand-ins for the proxy trial, scripted per trial seed.

Attempts are counted in files (one per seed), so a trial that runs in a Ray
worker process leaves a count the test can read. Ray workers cannot import
this module by name: tests register it with `cloudpickle.register_pickle_by_value`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from telescope.spec import MetricsCallback, Status, StepMetrics, TrialResult, TrialSpec

BEST_LR = 0.03


def expected_val_loss(lr: float) -> float:
    """The fake's loss landscape: a parabola in log lr with its minimum at BEST_LR."""
    return 2.0 + 0.1 * math.log(lr / BEST_LR) ** 2


@dataclass(frozen=True)
class FakeTrial:
    counter_dir: str
    fail_times: dict[int, int] = field(default_factory=dict)  # seed -> raises this many times first
    diverge: frozenset[int] = frozenset()  # seeds that return a diverged result
    crash: frozenset[int] = frozenset()  # seeds whose process dies (os._exit) mid-trial
    step_sleep_s: float = 0.0

    def __call__(self, spec: TrialSpec, on_metrics: MetricsCallback) -> TrialResult:
        attempt = self._count_attempt(spec.seed)
        start = time.perf_counter()
        steps = spec.train.steps
        tokens_per_step = spec.train.batch_size * spec.model.seq_len
        final = expected_val_loss(spec.lr)
        for step in range(1, steps + 1):
            if step == steps // 2 + 1:
                if spec.seed in self.crash:
                    os._exit(3)
                if attempt <= self.fail_times.get(spec.seed, 0):
                    raise RuntimeError(f"injected failure on attempt {attempt}")
            loss = float("nan") if spec.seed in self.diverge and step > 1 else final + 1.0 / step
            on_metrics(
                StepMetrics(
                    step=step,
                    tokens=step * tokens_per_step,
                    train_loss=loss,
                    lr=spec.lr,
                    grad_norm=1.0,
                    elapsed=time.perf_counter() - start,
                )
            )
            if self.step_sleep_s:
                time.sleep(self.step_sleep_s)
            if math.isnan(loss):
                return TrialResult(status=Status.DIVERGED, steps=step, wall_time=time.perf_counter() - start)
        return TrialResult(
            status=Status.COMPLETED,
            train_loss=final,
            val_loss=final,
            tokens=steps * tokens_per_step,
            steps=steps,
            wall_time=time.perf_counter() - start,
            device="cpu",
            fingerprint={"pid": os.getpid(), "ray_gcs": _ray_gcs_address()},
        )

    def _count_attempt(self, seed: int) -> int:
        path = Path(self.counter_dir) / f"seed-{seed}"
        with open(path, "ab") as f:
            f.write(b".")
        return path.stat().st_size

    def attempts(self, seed: int) -> int:
        path = Path(self.counter_dir) / f"seed-{seed}"
        return path.stat().st_size if path.exists() else 0


def _ray_gcs_address() -> str | None:
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().gcs_address


@dataclass(frozen=True)
class FakePack:
    """The pack function of FakeTrial: its trials one after another in one process."""

    trial: FakeTrial

    def __call__(self, specs: list[TrialSpec], callbacks: list[MetricsCallback]) -> list[TrialResult]:
        return [self.trial(spec, on_metrics) for spec, on_metrics in zip(specs, callbacks)]


@dataclass(frozen=True)
class DriftingTrial:
    """A trial whose optimal LR doubles with every doubling of the width (from BEST_LR at
    `base_width`): a drift the telescoping grid cannot follow, so the last level's best
    lands on an edge of its sub-grid."""

    base_width: int = 16

    def __call__(self, spec: TrialSpec, on_metrics: MetricsCallback) -> TrialResult:
        best = BEST_LR * spec.width / self.base_width
        final = 2.0 + 0.1 * math.log(spec.lr / best) ** 2
        tokens = spec.train.steps * spec.train.batch_size * spec.model.seq_len
        on_metrics(StepMetrics(step=1, tokens=tokens, train_loss=final, lr=spec.lr, grad_norm=1.0, elapsed=0.0))
        return TrialResult(status=Status.COMPLETED, train_loss=final, val_loss=final, tokens=tokens, steps=1)
