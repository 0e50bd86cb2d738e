"""Cancellation: of a session or of tasks, conditional so finished tasks are never touched."""

from __future__ import annotations

import pytest

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.core.errors import NotFound
from htcgrid.core.model import Counts
from htcgrid.core.states import TaskState

from .helpers import T0, TTL, assert_counts_exact, fail, open_session, states, succeed

P, R, S, F, C = (
    TaskState.PENDING,
    TaskState.RUNNING,
    TaskState.SUCCEEDED,
    TaskState.FAILED,
    TaskState.CANCELLED,
)


def _mixed(backend: Backend) -> list[str]:
    """A session with tasks in every state: succeeded, failed, running x2, pending x2."""
    ids = open_session(backend, "s", n=6, max_attempts=1)
    a, b, *_ = backend.claim("w", 4, TTL, T0)
    backend.complete([succeed(a), fail(b)], T0 + 1)
    assert states(backend, ids) == [S, F, R, R, P, P]
    return ids


def test_cancelling_a_session_cancels_its_pending_and_running_tasks(backend: Backend) -> None:
    ids = _mixed(backend)
    assert backend.cancel("s", None, T0 + 2) == 4
    assert states(backend, ids) == [S, F, C, C, C, C]
    info = backend.get_session("s")
    assert info.is_cancelled is True
    assert info.counts == Counts(succeeded=1, failed=1, cancelled=4)
    assert_counts_exact(backend, "s", ids)
    cancelled = backend.tasks(ids[2:])
    assert all(r.finished_at == T0 + 2 and r.result is None for r in cancelled)
    assert backend.claim("w", 10, TTL, T0 + 3) == []
    assert backend.cancel("s", None, T0 + 4) == 0


def test_a_cancelled_session_leaves_other_sessions_alone(backend: Backend) -> None:
    _mixed(backend)
    other = open_session(backend, "other", n=2)
    backend.cancel("s", None, T0 + 2)
    assert [c.task_id for c in backend.claim("w", 10, TTL, T0 + 3)] == other
    assert backend.get_session("other").is_cancelled is False


def test_cancelled_attempts_lose_their_leases(backend: Backend) -> None:
    ids = _mixed(backend)
    keys = [LeaseKey(tid, 1) for tid in ids[2:4]]
    backend.cancel("s", None, T0 + 2)
    assert backend.renew("w", keys, TTL, T0 + 3) == [False, False]
    assert backend.expired(T0 + 1000, 10) == []


def test_cancelling_some_tasks_leaves_the_rest(backend: Backend) -> None:
    ids = _mixed(backend)
    picked = [ids[0], ids[2], ids[4]]  # succeeded, running, pending
    assert backend.cancel("s", picked, T0 + 2) == 2
    assert states(backend, ids) == [S, F, C, R, C, P]
    assert backend.get_session("s").is_cancelled is False
    assert_counts_exact(backend, "s", ids)
    assert backend.tasks(ids[:1])[0].result == b"ok"
    assert [c.task_id for c in backend.claim("w", 10, TTL, T0 + 3)] == [ids[5]]


def test_cancelling_a_task_twice_counts_once(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    assert backend.cancel("s", [ids[0], ids[0]], T0) == 1
    assert backend.cancel("s", [ids[0]], T0) == 0
    assert backend.counts("s") == Counts(pending=1, cancelled=1)
    assert [r.done_seq for r in backend.finished("s", 0, 10)] == [1]


def test_an_unknown_task_cancels_nothing(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    open_session(backend, "other", n=1)
    for bad in ("s.7", "other.0"):
        with pytest.raises(NotFound):
            backend.cancel("s", [ids[0], bad], T0)
    assert states(backend, ids) == [P, P]
    assert states(backend, ["other.0"]) == [P]
    assert backend.counts("s") == Counts(pending=2)


def test_cancel_then_complete_rejects_the_completion(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    a, b = backend.claim("w", 2, TTL, T0)
    backend.cancel("s", [a.task_id], T0 + 1)
    backend.cancel("s", None, T0 + 1)
    assert backend.complete([succeed(a, b"late"), fail(b)], T0 + 2) == [False, False]
    records = backend.tasks(ids)
    assert [r.state for r in records] == [C, C]
    assert [r.result for r in records] == [None, None]
    assert backend.counts("s") == Counts(cancelled=2)


def test_complete_then_cancel_leaves_the_result(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    assert backend.complete([succeed(c, b"kept")], T0 + 1) == [True]
    assert backend.cancel("s", ids, T0 + 2) == 0
    assert backend.cancel("s", None, T0 + 3) == 0
    record = backend.tasks(ids)[0]
    assert (record.state, record.result, record.finished_at) == (S, b"kept", T0 + 1)
    assert backend.counts("s") == Counts(succeeded=1)


def test_a_pending_retry_can_be_cancelled(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, retry_backoff_s=60.0)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([fail(c)], T0)
    assert backend.cancel("s", ids, T0 + 1) == 1
    assert backend.claim("w", 1, TTL, T0 + 1000) == []
    assert states(backend, ids) == [C]
    assert_counts_exact(backend, "s", ids)


def test_cancelled_tasks_join_the_finished_stream(backend: Backend) -> None:
    ids = _mixed(backend)
    backend.cancel("s", None, T0 + 2)
    stream = backend.finished("s", 0, 100)
    assert sorted(r.task_id for r in stream) == sorted(ids)
    assert [r.done_seq for r in stream] == [1, 2, 3, 4, 5, 6]
    assert {r.task_id for r in stream[2:]} == set(ids[2:])
