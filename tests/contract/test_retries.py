"""Retries: a failed attempt goes back to pending (maybe delayed) or fails the task for good."""

from __future__ import annotations

import pytest

from htcgrid.backends.base import Backend
from htcgrid.core.errors import InvalidTransition
from htcgrid.core.model import Completion, Counts, ErrorInfo, FailureKind
from htcgrid.core.states import TaskState

from .helpers import T0, TTL, assert_counts_exact, error, fail, open_session, succeed


def test_a_failed_attempt_with_attempts_left_is_pending_again(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=3)
    [c] = backend.claim("w", 1, TTL, T0)
    assert backend.complete([fail(c)], T0 + 1) == [True]
    record = backend.tasks(ids)[0]
    assert record.state is TaskState.PENDING
    assert (record.attempt, record.n_errors) == (1, 1)
    assert record.error == error()  # the last error stays visible while the task waits
    assert record.done_seq is None and record.finished_at is None
    assert backend.counts("s") == Counts(pending=1)
    assert backend.finished("s", 0, 10) == []


def test_a_delayed_retry_is_not_claimable_before_its_time(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=3, retry_backoff_s=10.0)
    [c] = backend.claim("w", 1, TTL, T0)
    retry = fail(c, now=T0 + 1)
    assert retry.not_before == T0 + 11
    backend.complete([retry], T0 + 1)
    assert backend.claim("w", 10, TTL, T0 + 10.999) == []
    assert backend.counts("s") == Counts(pending=1)
    [again] = backend.claim("w", 10, TTL, T0 + 11)
    assert (again.task_id, again.attempt, again.lease.n_errors) == (ids[0], 2, 1)


def test_a_delayed_retry_does_not_hold_back_other_tasks(backend: Backend) -> None:
    ids = open_session(backend, "s", n=3, retry_backoff_s=100.0)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([fail(c)], T0)
    assert [x.task_id for x in backend.claim("w", 10, TTL, T0 + 1)] == ids[1:]
    assert [x.task_id for x in backend.claim("w", 10, TTL, T0 + 100)] == ids[:1]


def test_an_immediate_retry_is_claimable_at_once(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=2)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([fail(c)], T0)
    [again] = backend.claim("w2", 1, TTL, T0)
    assert (again.task_id, again.attempt, again.lease.worker_id) == (ids[0], 2, "w2")


@pytest.mark.parametrize(
    ("kind", "counter"),
    [
        (FailureKind.ERROR, "n_errors"),
        (FailureKind.TIMEOUT, "n_timeouts"),
        (FailureKind.LOST, "n_lost"),
    ],
)
def test_each_kind_of_failure_has_its_own_counter(
    backend: Backend, kind: FailureKind, counter: str
) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=3)
    for i in range(3):
        [c] = backend.claim("w", 1, TTL, T0 + i)
        assert c.attempt == i + 1
        assert getattr(c.lease, counter) == i
        assert backend.complete([fail(c, kind, T0 + i)], T0 + i) == [True]
    record = backend.tasks(ids)[0]
    assert record.state is TaskState.FAILED
    counters = {"n_errors": 0, "n_timeouts": 0, "n_lost": 0, counter: 3}
    assert {k: getattr(record, k) for k in counters} == counters
    assert record.error is not None and record.error.kind is kind


def test_counters_add_up_across_kinds(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=4)
    for i, kind in enumerate([FailureKind.ERROR, FailureKind.TIMEOUT, FailureKind.LOST]):
        [c] = backend.claim("w", 1, TTL, T0 + i)
        backend.complete([fail(c, kind)], T0 + i)
    [c] = backend.claim("w", 1, TTL, T0 + 5)
    assert (c.lease.n_errors, c.lease.n_timeouts, c.lease.n_lost) == (1, 1, 1)
    backend.complete([succeed(c, b"finally")], T0 + 6)
    record = backend.tasks(ids)[0]
    assert (record.state, record.result, record.attempt) == (TaskState.SUCCEEDED, b"finally", 4)
    assert (record.n_errors, record.n_timeouts, record.n_lost) == (1, 1, 1)


def test_the_last_failure_is_final_and_keeps_the_error(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2, max_attempts=1)
    [c, _] = backend.claim("w", 2, TTL, T0)
    info = ErrorInfo(
        kind=FailureKind.ERROR,
        type="ZeroDivisionError",
        message="division by zero \u2014 r\u00e9sultat",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\n',
        exception=b"\x80\x05\x00\xff pickled",
    )
    final = Completion(
        task_id=c.task_id,
        worker_id="w",
        attempt=1,
        state=TaskState.FAILED,
        error=info,
        failure=FailureKind.ERROR,
    )
    assert backend.complete([final], T0 + 3) == [True]
    record = backend.tasks(ids[:1])[0]
    assert record.state is TaskState.FAILED
    assert record.error == info
    assert record.result is None and record.result_ref is None
    assert (record.finished_at, record.done_seq) == (T0 + 3, 1)
    assert backend.claim("w", 10, TTL, T0 + 100) == []
    assert backend.complete([fail(c)], T0 + 4) == [False]  # terminal stays terminal
    assert_counts_exact(backend, "s", ids)
    assert backend.counts("s") == Counts(running=1, failed=1)


def test_an_outcome_the_transition_table_forbids_refuses_the_whole_batch(
    backend: Backend,
) -> None:
    ids = open_session(backend, "s", n=2)
    a, b = backend.claim("w", 2, TTL, T0)
    still_running = Completion(task_id=b.task_id, worker_id="w", attempt=1, state=TaskState.RUNNING)
    with pytest.raises(InvalidTransition):
        backend.complete([succeed(a), still_running], T0)
    assert [r.state for r in backend.tasks(ids)] == [TaskState.RUNNING, TaskState.RUNNING]
    assert_counts_exact(backend, "s", ids)
    assert backend.complete([succeed(a), succeed(b)], T0) == [True, True]
