"""The executor contract: run a batch of keyed trials, report events to the driver.

The driver (the sweep) is the only writer of the database: executors never touch
storage, they call the `TrialEvents` methods in the driver's process instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence

from telescope.spec import MetricsCallback, StepMetrics, TrialResult, TrialSpec

TrialFn = Callable[[TrialSpec, MetricsCallback], TrialResult]


@dataclass(frozen=True)
class ExecutorSettings:
    kind: Literal["ray", "local"] = "ray"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional GPUs share one device between small proxies
    max_concurrent: int | None = None  # None: as many as the resources allow
    max_retries: int = 1  # a trial that raises is retried this many times, then `failed`
    ray_address: str | None = None  # None: start Ray on this machine


class TrialEvents(Protocol):
    def started(self, key: str) -> None: ...

    def metrics(self, key: str, rows: list[StepMetrics]) -> None: ...

    def finished(self, key: str, result: TrialResult) -> None: ...


class Executor(Protocol):
    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        """Run every trial; return when each has had `finished` called (completed,
        diverged or failed). Events are delivered in the caller's process."""
        ...

    def close(self) -> None: ...
