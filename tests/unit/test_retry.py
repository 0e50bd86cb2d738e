"""The retry policy: how an attempt ends, as a pure function of its lease, error and time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcgrid.backends.base import DRIFT_AFTER_S, drifting
from htcgrid.core.model import Completion, ErrorInfo, FailureKind, Lease
from htcgrid.core.retry import (
    MAX_BACKOFF_S,
    backoff_s,
    decide_failure,
    decide_success,
    lost_error,
)
from htcgrid.core.states import TaskState, check_transition

NOW = 1_000.0
RETRIED_KINDS = [FailureKind.ERROR, FailureKind.TIMEOUT, FailureKind.LOST]


def make_lease(attempt: int = 1, max_attempts: int = 3, retry_backoff_s: float = 0.0) -> Lease:
    return Lease(
        task_id="s1.7",
        worker_id="w1",
        attempt=attempt,
        lease_expiry=NOW + 30.0,
        max_attempts=max_attempts,
        retry_backoff_s=retry_backoff_s,
    )


def make_error(kind: FailureKind = FailureKind.ERROR) -> ErrorInfo:
    return ErrorInfo(kind=kind, type="ValueError", message="boom", traceback="tb")


def test_max_backoff_is_five_minutes() -> None:
    assert MAX_BACKOFF_S == 300.0


@pytest.mark.parametrize(
    ("base_s", "attempt", "expected"),
    [
        (1.0, 1, 1.0),
        (1.0, 2, 2.0),
        (1.0, 3, 4.0),
        (1.0, 4, 8.0),
        (0.5, 4, 4.0),
        (2.0, 5, 32.0),
        (1.0, 9, 256.0),
        (1.0, 10, MAX_BACKOFF_S),  # 512 capped
        (100.0, 3, MAX_BACKOFF_S),  # 400 capped
        (300.0, 1, 300.0),
        (1_000.0, 1, MAX_BACKOFF_S),
        (float("inf"), 1, MAX_BACKOFF_S),
        (1.0, 0, 1.0),  # attempts count from 1; anything below behaves as the first
        (1.0, -3, 1.0),
        (0.0, 5, 0.0),
        (-1.0, 5, 0.0),
        (1.0, 1_025, MAX_BACKOFF_S),  # 2.0**1024 overflows a float
        (1e-300, 5_000, MAX_BACKOFF_S),
        (1.0, 10**9, MAX_BACKOFF_S),
    ],
)
def test_backoff_s(base_s: float, attempt: int, expected: float) -> None:
    assert backoff_s(base_s, attempt) == expected
    assert type(backoff_s(base_s, attempt)) is float


@settings(database=None, deadline=None)
@given(
    base_s=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    attempt=st.integers(min_value=1, max_value=5_000),
)
def test_backoff_doubles_until_the_cap(base_s: float, attempt: int) -> None:
    delay = backoff_s(base_s, attempt)
    assert 0.0 < delay <= MAX_BACKOFF_S
    assert backoff_s(base_s, attempt + 1) == min(MAX_BACKOFF_S, 2 * delay)


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "base_s", "kind", "state", "not_before"),
    [
        # attempts remain: back to pending, claimable after the backoff
        (1, 3, 2.0, FailureKind.ERROR, TaskState.PENDING, NOW + 2.0),
        (2, 3, 2.0, FailureKind.ERROR, TaskState.PENDING, NOW + 4.0),
        (1, 3, 0.0, FailureKind.ERROR, TaskState.PENDING, NOW),
        (1, 2, 5.0, FailureKind.TIMEOUT, TaskState.PENDING, NOW + 5.0),
        (3, 5, 1.0, FailureKind.LOST, TaskState.PENDING, NOW + 4.0),
        (9, 20, 1.0, FailureKind.ERROR, TaskState.PENDING, NOW + 256.0),
        (10, 20, 1.0, FailureKind.ERROR, TaskState.PENDING, NOW + MAX_BACKOFF_S),
        (2_000, 5_000, 1.0, FailureKind.LOST, TaskState.PENDING, NOW + MAX_BACKOFF_S),
        # the last attempt: failed for good, whatever the kind
        (3, 3, 2.0, FailureKind.ERROR, TaskState.FAILED, 0.0),
        (1, 1, 2.0, FailureKind.ERROR, TaskState.FAILED, 0.0),
        (2, 2, 0.0, FailureKind.TIMEOUT, TaskState.FAILED, 0.0),
        (5, 5, 1.0, FailureKind.LOST, TaskState.FAILED, 0.0),
        (4, 3, 1.0, FailureKind.ERROR, TaskState.FAILED, 0.0),  # past the last: still failed
        # refusals are never retried: another worker of the same policy would refuse too
        (1, 3, 2.0, FailureKind.REFUSED, TaskState.FAILED, 0.0),
        (1, 100, 0.0, FailureKind.REFUSED, TaskState.FAILED, 0.0),
        (3, 3, 2.0, FailureKind.REFUSED, TaskState.FAILED, 0.0),
    ],
)
def test_decide_failure(
    attempt: int,
    max_attempts: int,
    base_s: float,
    kind: FailureKind,
    state: TaskState,
    not_before: float,
) -> None:
    lease = make_lease(attempt, max_attempts, base_s)
    error = make_error(kind)
    c = decide_failure(lease, error, NOW)
    assert c == Completion(
        task_id="s1.7",
        worker_id="w1",
        attempt=attempt,
        state=state,
        error=error,
        failure=kind,
        not_before=not_before,
    )
    check_transition(TaskState.RUNNING, c.state)


@pytest.mark.parametrize("kind", list(FailureKind), ids=str)
def test_decide_failure_names_the_counter_of_its_kind(kind: FailureKind) -> None:
    # the store adds one to the counter that ``failure`` names (n_errors, n_timeouts, ...)
    c = decide_failure(make_lease(), make_error(kind), NOW)
    assert c.failure is kind
    assert c.error is not None
    assert c.error.kind is kind
    assert c.result is None
    assert c.result_ref is None


@pytest.mark.parametrize("kind", RETRIED_KINDS, ids=str)
def test_every_retried_kind_uses_up_the_same_attempts(kind: FailureKind) -> None:
    states = [
        decide_failure(make_lease(attempt, 4), make_error(kind), NOW).state
        for attempt in range(1, 5)
    ]
    assert states == [TaskState.PENDING] * 3 + [TaskState.FAILED]


def test_decide_failure_ignores_earlier_counts() -> None:
    # the attempt number alone decides: earlier errors, timeouts and losses are history
    lease = Lease(
        task_id="s1.7",
        worker_id="w1",
        attempt=2,
        lease_expiry=NOW,
        max_attempts=3,
        retry_backoff_s=1.0,
        n_errors=1,
        n_timeouts=0,
        n_lost=0,
    )
    c = decide_failure(lease, make_error(FailureKind.TIMEOUT), NOW)
    assert (c.state, c.not_before) == (TaskState.PENDING, NOW + 2.0)


@pytest.mark.parametrize(
    ("result", "result_ref"),
    [(b"\x80\x05N.", None), (b"", None), (None, "s1/output-0123"), (None, None)],
)
def test_decide_success(result: bytes | None, result_ref: str | None) -> None:
    c = decide_success(make_lease(attempt=2), result, result_ref)
    assert c == Completion(
        task_id="s1.7",
        worker_id="w1",
        attempt=2,
        state=TaskState.SUCCEEDED,
        result=result,
        result_ref=result_ref,
    )
    assert (c.error, c.failure, c.not_before) == (None, None, 0.0)
    check_transition(TaskState.RUNNING, c.state)


def test_lost_error_blames_the_worker() -> None:
    error = lost_error(make_lease(attempt=2))
    assert error.kind is FailureKind.LOST
    assert error.type == "WorkerLost"
    assert "worker w1" in error.message
    assert "attempt 2" in error.message


def test_a_lost_lease_is_retried_like_any_failure() -> None:
    lease = make_lease(attempt=1, max_attempts=2, retry_backoff_s=3.0)
    c = decide_failure(lease, lost_error(lease), NOW)
    assert (c.state, c.failure, c.not_before) == (TaskState.PENDING, FailureKind.LOST, NOW + 3.0)


def test_a_drifting_clock_counts_from_when_the_operation_began() -> None:
    clock = drifting(1000.0)
    assert clock() == 1000.0  # a prompt operation keeps the caller's time exactly
    time.sleep(DRIFT_AFTER_S + 0.05)  # e.g. a first read that waited out a broken link
    first = clock()
    assert first >= 1000.0 + DRIFT_AFTER_S + 0.05  # a lease granted now counts from now
    assert clock() >= first
