"""The failure policy shared by every executor: the one place where trial errors are caught.

A trial function that raises is retried up to `max_retries` times; after that the
trial is `failed` with the last error kept. A returned result, diverged included,
is never retried: divergence is data, not an error.
"""

from __future__ import annotations

import os
import traceback
from typing import Callable

from telescope.spec import MetricsCallback, Status, TrialResult, TrialSpec
from telescope.trials.base import TrialFn


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


def describe_error(exc: BaseException) -> str:
    """One line: exception type, message and where it was raised."""
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text
