"""The failure policy shared by every executor: the one place where trial errors are caught.

A trial function that raises is retried up to `max_retries` times; after that the
trial is `failed` with the last error kept. A returned result, diverged included,
is never retried: divergence is data, not an error.
"""

from __future__ import annotations

import os
import traceback
from typing import Callable, Sequence

from telescope.spec import MetricsCallback, Status, TrialResult, TrialSpec
from telescope.trials.base import PackFn, TrialFn


def run_with_retries(
    trial_fn: TrialFn,
    spec: TrialSpec,
    on_metrics: MetricsCallback,
    max_retries: int,
    on_retry: Callable[[int], None] | None = None,
) -> TrialResult:
    """Run `trial_fn` until it returns, at most `max_retries + 1` times.

    `on_retry(attempt)` is called before each retry (attempt 1, 2, ...), so the
    caller can discard what the failed attempt streamed.
    """
    attempts = max_retries + 1
    error = ""
    for attempt in range(attempts):
        if attempt and on_retry is not None:
            on_retry(attempt)
        try:
            return trial_fn(spec, on_metrics)
        except Exception as exc:  # noqa: BLE001 - any error of the trial is a trial error
            error = describe_error(exc)
    plural = "s" if attempts > 1 else ""
    return TrialResult(status=Status.FAILED, error=f"failed after {attempts} attempt{plural}: {error}")


def run_pack_with_retries(
    trial_fn: TrialFn,
    pack_fn: PackFn | None,
    specs: Sequence[TrialSpec],
    on_metrics: Sequence[MetricsCallback],
    max_retries: int,
    on_retry: Callable[[int, int], None],
) -> list[TrialResult]:
    """Run `specs` as one pack through `pack_fn`; if the pack raises (a pack too large for
    the device, say), run each of its trials alone through `run_with_retries`, so no trial
    gets fewer attempts than unpacked. `on_retry(index, attempt)` is called before trial
    `index` starts again (attempt 1, 2, ...). One spec, or no `pack_fn`: one trial at a time."""
    if pack_fn is None or len(specs) == 1:
        return [
            run_with_retries(trial_fn, spec, callback, max_retries, lambda attempt, i=i: on_retry(i, attempt))
            for i, (spec, callback) in enumerate(zip(specs, on_metrics))
        ]
    try:
        return pack_fn(specs, on_metrics)
    except Exception:  # noqa: BLE001 - the pack's trials are retried one by one below
        pass
    results = []
    for i, (spec, callback) in enumerate(zip(specs, on_metrics)):
        on_retry(i, 1)
        results.append(
            run_with_retries(trial_fn, spec, callback, max_retries, lambda attempt, i=i: on_retry(i, attempt + 1))
        )
    return results


def describe_error(exc: BaseException) -> str:
    """One line: exception type, message and where it was raised."""
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text
