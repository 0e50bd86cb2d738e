"""Leases: renewal, expiry, and fencing of completions by (worker, attempt)."""

from __future__ import annotations

import pytest
from msgspec import structs

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.backends.blobs import output_blob_key
from htcgrid.core.errors import NotFound
from htcgrid.core.model import Claim, Counts, FailureKind
from htcgrid.core.retry import decide_failure, lost_error
from htcgrid.core.states import TaskState
from htcgrid.reaper.reaper import reap_once

from .helpers import T0, TTL, assert_counts_exact, open_session, succeed


def _key(claim: Claim) -> LeaseKey:
    return LeaseKey(claim.task_id, claim.attempt)


def _reap(backend: Backend, now: float) -> list[str]:
    """Play the reaper: end every expired attempt through the retry policy."""
    leases = backend.expired(now, 1000)
    decisions = [decide_failure(lease, lost_error(lease), now) for lease in leases]
    accepted = backend.expire(decisions, now)
    return [lease.task_id for lease, ok in zip(leases, accepted, strict=True) if ok]


def test_expired_lists_running_attempts_past_their_lease_oldest_first(backend: Backend) -> None:
    ids = open_session(backend, "s", n=4, max_attempts=7, retry_backoff_s=2.0)
    backend.claim("w1", 1, 10.0, T0)  # expires T0 + 10
    backend.claim("w2", 1, 5.0, T0)  # expires T0 + 5
    backend.claim("w3", 1, 50.0, T0)  # expires T0 + 50
    assert backend.expired(T0 + 4, 10) == []
    leases = backend.expired(T0 + 10, 10)
    assert [(x.task_id, x.worker_id, x.lease_expiry) for x in leases] == [
        (ids[1], "w2", T0 + 5),
        (ids[0], "w1", T0 + 10),
    ]
    assert all(x.attempt == 1 and x.max_attempts == 7 for x in leases)
    assert all(x.retry_backoff_s == 2.0 for x in leases)
    assert [x.task_id for x in backend.expired(T0 + 100, 1)] == [ids[1]]
    assert backend.expired(T0 + 100, 0) == []


def test_renew_extends_a_held_lease(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, 10.0, T0)
    assert backend.renew("w", [_key(c)], 10.0, T0 + 8) == [True]
    assert backend.expired(T0 + 12, 10) == []
    [lease] = backend.expired(T0 + 18, 10)
    assert lease.lease_expiry == T0 + 18
    assert backend.tasks([c.task_id])[0].state is TaskState.RUNNING


def test_renew_is_false_for_leases_not_held(backend: Backend) -> None:
    ids = open_session(backend, "s", n=3)
    a, b, c = backend.claim("w", 3, TTL, T0)
    backend.complete([succeed(b)], T0)
    held = backend.renew(
        "w",
        [
            _key(a),
            LeaseKey(a.task_id, 2),  # wrong attempt
            _key(b),  # finished
            LeaseKey("s.99", 1),  # no such task
            LeaseKey("nope.0", 1),  # no such session
        ],
        TTL,
        T0 + 1,
    )
    assert held == [True, False, False, False, False]
    assert backend.renew("other", [_key(c)], TTL, T0 + 1) == [False]  # wrong worker
    assert_counts_exact(backend, "s", ids)


def test_renew_is_false_after_the_attempt_was_reaped(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, 10.0, T0)
    assert _reap(backend, T0 + 11) == [c.task_id]
    assert backend.renew("w", [_key(c)], 10.0, T0 + 12) == [False]


def test_an_expired_lease_is_retried_with_the_loss_counted(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=3)
    backend.claim("w1", 1, 10.0, T0)
    assert _reap(backend, T0 + 10) == ids
    record = backend.tasks(ids)[0]
    assert record.state is TaskState.PENDING
    assert (record.attempt, record.n_lost, record.n_errors) == (1, 1, 0)
    assert record.error is not None and record.error.kind is FailureKind.LOST
    assert_counts_exact(backend, "s", ids)

    [again] = backend.claim("w2", 1, 10.0, T0 + 11)
    assert again.attempt == 2
    assert again.lease.n_lost == 1


def test_the_last_expired_attempt_fails_the_task(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=2)
    for i in range(2):
        backend.claim("w", 1, 10.0, T0 + 100 * i)
        assert _reap(backend, T0 + 100 * i + 50) == ids
    record = backend.tasks(ids)[0]
    assert record.state is TaskState.FAILED
    assert (record.attempt, record.n_lost) == (2, 2)
    assert record.error is not None and record.error.type == "WorkerLost"
    assert record.done_seq == 1
    assert backend.counts("s") == Counts(failed=1)


def test_a_renewal_that_beats_the_reaper_wins(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, 10.0, T0)
    [lease] = backend.expired(T0 + 11, 10)  # the reaper sees it expired...
    assert backend.renew("w", [_key(c)], 10.0, T0 + 11) == [True]  # ...the worker renews...
    decision = decide_failure(lease, lost_error(lease), T0 + 11)
    assert backend.expire([decision], T0 + 11) == [False]  # ...and the reaper's write loses
    assert backend.tasks(ids)[0].state is TaskState.RUNNING
    assert backend.complete([succeed(c)], T0 + 12) == [True]


def test_a_late_completion_from_a_reaped_attempt_is_rejected(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [old] = backend.claim("w1", 1, 10.0, T0)
    _reap(backend, T0 + 11)
    assert backend.complete([succeed(old, b"late")], T0 + 12) == [False]  # still pending
    [new] = backend.claim("w2", 1, 10.0, T0 + 13)
    assert backend.complete([succeed(old, b"late")], T0 + 14) == [False]  # someone else's now
    assert backend.complete([succeed(new, b"accepted")], T0 + 15) == [True]
    assert backend.complete([succeed(old, b"late")], T0 + 16) == [False]  # finished
    record = backend.tasks(ids)[0]
    assert (record.state, record.result, record.attempt) == (TaskState.SUCCEEDED, b"accepted", 2)
    assert record.finished_at == T0 + 15
    assert backend.counts("s") == Counts(succeeded=1)


def test_the_same_worker_reclaiming_is_fenced_by_attempt(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [old] = backend.claim("w", 1, 10.0, T0)
    _reap(backend, T0 + 11)
    [new] = backend.claim("w", 1, 10.0, T0 + 12)
    assert backend.renew("w", [_key(old)], 10.0, T0 + 12) == [False]
    assert backend.complete([succeed(old, b"old")], T0 + 13) == [False]
    assert backend.complete([succeed(new, b"new")], T0 + 13) == [True]
    assert backend.tasks(ids)[0].result == b"new"


def test_the_first_valid_completion_wins(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    assert backend.complete([succeed(c, b"first"), succeed(c, b"second")], T0) == [True, False]
    assert backend.complete([succeed(c, b"third")], T0 + 1) == [False]
    record = backend.tasks(ids)[0]
    assert (record.result, record.done_seq, record.finished_at) == (b"first", 1, T0)
    assert backend.counts("s") == Counts(succeeded=1)


def test_a_completion_from_another_worker_is_rejected(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    assert backend.complete([structs.replace(succeed(c), worker_id="other")], T0) == [False]
    assert backend.complete([structs.replace(succeed(c), attempt=2)], T0) == [False]
    assert backend.tasks(ids)[0].state is TaskState.RUNNING
    assert backend.complete([succeed(c)], T0) == [True]


def test_completing_an_unknown_task_is_rejected_not_raised(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    ghosts = [structs.replace(succeed(c), task_id=tid) for tid in ("s.5", "nope.0")]
    assert backend.complete([*ghosts, succeed(c)], T0) == [False, False, True]


def test_expire_needs_the_lease_to_be_expired(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, 10.0, T0)
    decision = decide_failure(c.lease, lost_error(c.lease), T0 + 5)
    assert backend.expire([decision], T0 + 5) == [False]
    assert backend.tasks(ids)[0].state is TaskState.RUNNING
    assert backend.expire([decision], T0 + 10) == [True]
    assert backend.tasks(ids)[0].state is TaskState.PENDING


def test_the_reaper_deletes_the_result_an_expired_attempt_may_have_written(
    backend: Backend,
) -> None:
    open_session(backend, "s", n=2, max_attempts=3)
    [dead] = backend.claim("w1", 1, 10.0, T0)  # its worker wrote the result, then died
    [alive] = backend.claim("w2", 1, 100.0, T0)
    dead_key = output_blob_key(dead.task_id, dead.attempt)
    alive_key = output_blob_key(alive.task_id, alive.attempt)
    backend.blobs.put(dead_key, b"written before the worker died")
    backend.blobs.put(alive_key, b"written by a live attempt")
    assert reap_once(backend, T0 + 11) == 1
    with pytest.raises(NotFound):
        backend.blobs.get(dead_key)
    assert backend.blobs.get(alive_key) == b"written by a live attempt"
    assert backend.counts("s") == Counts(pending=1, running=1)
