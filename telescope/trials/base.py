"""The executor contract: run a batch of keyed trials, report events to the driver.

The driver (the sweep) is the only writer of the database: executors never touch
storage, they call the `TrialEvents` methods in the driver's process instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Literal, Protocol, Sequence

from telescope.errors import ConfigError
from telescope.spec import MetricsCallback, StepMetrics, TrialResult, TrialSpec

TrialFn = Callable[[TrialSpec, MetricsCallback], TrialResult]
# Trains several trials as one pack (telescope.training.train.run_trials): results in order.
PackFn = Callable[[Sequence[TrialSpec], Sequence[MetricsCallback]], list[TrialResult]]
# Trials with equal keys can share a pack; None: the trial always runs alone.
PackKeyFn = Callable[[TrialSpec], Hashable | None]

DEFAULT_PACK = 8  # trials per pack when the config does not say


@dataclass(frozen=True)
class ExecutorSettings:
    kind: Literal["ray", "local"] = "ray"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional GPUs share one device between small proxies
    max_concurrent: int | None = None  # None: as many as the resources allow
    max_retries: int = 1  # a trial that raises is retried this many times, then `failed`
    ray_address: str | None = None  # None: start Ray on this machine
    # Trials of one shape trained together in one process as one batched model; 1: never
    # packed. None: DEFAULT_PACK (kept out of the config's hash, as before packing existed).
    pack: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ray", "local"):
            raise ConfigError(f"executor must be 'ray' or 'local', got {self.kind!r}")
        if not self.cpus_per_trial > 0:
            raise ConfigError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if not self.gpus_per_trial >= 0:
            raise ConfigError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ConfigError(f"gpus_per_trial above 1 must be a whole number, got {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.pack is not None and not 1 <= self.pack <= 1024:
            raise ConfigError(f"pack must be between 1 and 1024 trials, got {self.pack}")

    @property
    def pack_size(self) -> int:
        return DEFAULT_PACK if self.pack is None else self.pack


@dataclass(frozen=True)
class Packing:
    """How an executor packs trials, given by whoever trains them (executors know no model):
    `key` says which trials can share a pack, `train` trains one."""

    key: PackKeyFn
    train: PackFn


class TrialEvents(Protocol):
    """Called in the driver's process. Per key: `started`, `metrics` (step rows in
    order), then exactly one `finished`. When a trial that raised is retried,
    `started` is called again for its key: the rows delivered since the previous
    `started` belong to the abandoned attempt and should be dropped."""

    def started(self, key: str) -> None: ...

    def metrics(self, key: str, rows: list[StepMetrics]) -> None: ...

    def finished(self, key: str, result: TrialResult) -> None: ...


class Executor(Protocol):
    def run(self, trials: Sequence[tuple[str, TrialSpec]], events: TrialEvents) -> None:
        """Run every trial; return when each has had `finished` called (completed,
        diverged or failed). Events are delivered in the caller's process."""
        ...

    def close(self) -> None: ...
