"""The retry policy: how a failed attempt ends, decided in one pure function."""

from __future__ import annotations

import math

from htcgrid.core.model import Completion, ErrorInfo, FailureKind, Lease
from htcgrid.core.states import TaskState

#: The longest a retry is ever delayed, whatever the backoff base and attempt number.
MAX_BACKOFF_S = 300.0


def backoff_s(base_s: float, attempt: int) -> float:
    """Delay before the retry that follows ``attempt``: ``base * 2**(attempt-1)``, capped."""
    if base_s <= 0:
        return 0.0
    try:
        delay = math.ldexp(base_s, max(0, attempt - 1))
    except OverflowError:  # a long-retried task: far past the cap, not an error
        return MAX_BACKOFF_S
    return float(min(MAX_BACKOFF_S, delay))


def decide_failure(lease: Lease, error: ErrorInfo, now: float) -> Completion:
    """The completion for an attempt that failed: a retry while attempts remain, else failed.

    Refusals are never retried: another attempt on a worker of the same policy would refuse too.
    """
    is_last = lease.attempt >= lease.max_attempts or error.kind is FailureKind.REFUSED
    return Completion(
        task_id=lease.task_id,
        worker_id=lease.worker_id,
        attempt=lease.attempt,
        state=TaskState.FAILED if is_last else TaskState.PENDING,
        error=error,
        failure=error.kind,
        not_before=0.0 if is_last else now + backoff_s(lease.retry_backoff_s, lease.attempt),
    )


def decide_success(lease: Lease, result: bytes | None, result_ref: str | None) -> Completion:
    """The completion for an attempt whose handler returned."""
    return Completion(
        task_id=lease.task_id,
        worker_id=lease.worker_id,
        attempt=lease.attempt,
        state=TaskState.SUCCEEDED,
        result=result,
        result_ref=result_ref,
    )


def lost_error(lease: Lease) -> ErrorInfo:
    """The error recorded when a lease expires: the worker stopped renewing it."""
    return ErrorInfo(
        kind=FailureKind.LOST,
        type="WorkerLost",
        message=(
            f"worker {lease.worker_id} stopped renewing its lease on attempt {lease.attempt} "
            "(it died, hung or lost its connection to the store)"
        ),
    )
