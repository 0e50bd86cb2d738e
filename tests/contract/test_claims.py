"""Claiming: leases, oldest first, exclusivity under concurrency, priority and fair share."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.core.model import Codec, Counts
from htcgrid.core.states import TaskState

from .helpers import (
    HANDLER,
    T0,
    TTL,
    assert_counts_exact,
    drain,
    drain_in_process,
    new_tasks,
    open_session,
)


def test_a_claim_starts_the_oldest_tasks_under_fresh_leases(backend: Backend) -> None:
    ids = open_session(backend, "s", n=5, max_attempts=4, retry_backoff_s=0.25)
    claims = backend.claim("w1", 3, TTL, T0 + 1)
    assert [c.task_id for c in claims] == ids[:3]
    for i, c in enumerate(claims):
        assert c.session_id == "s"
        assert c.attempt == 1
        assert c.lease.worker_id == "w1"
        assert c.lease.lease_expiry == T0 + 1 + TTL
        assert c.lease.max_attempts == 4
        assert c.lease.retry_backoff_s == 0.25
        assert (c.lease.n_errors, c.lease.n_timeouts, c.lease.n_lost) == (0, 0, 0)
        assert c.handler == HANDLER
        assert c.codec is Codec.RAW
        assert c.payload == b"p%d" % i
        assert c.payload_ref is None
    assert backend.counts("s") == Counts(pending=2, running=3)
    assert_counts_exact(backend, "s", ids)
    records = backend.tasks(ids[:3])
    assert all(r.state is TaskState.RUNNING and r.attempt == 1 for r in records)


def test_next_claims_continue_where_the_last_stopped(backend: Backend) -> None:
    ids = open_session(backend, "s", n=5)
    first = backend.claim("w1", 2, TTL, T0)
    second = backend.claim("w2", 10, TTL, T0)
    assert [c.task_id for c in first + second] == ids
    assert backend.claim("w3", 10, TTL, T0) == []


def test_nothing_to_claim(backend: Backend) -> None:
    assert backend.claim("w", 10, TTL, T0) == []
    open_session(backend, "s", n=3)
    assert backend.claim("w", 0, TTL, T0) == []
    assert backend.counts("s") == Counts(pending=3)


def _claim_in_processes(backend: Backend, n_workers: int, batch: int) -> list[list[str]]:
    """Drain the store from ``n_workers`` OS processes, each with its own handle."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    start = ctx.Barrier(n_workers)
    out = ctx.Queue()
    args = [(backend.url, f"w{i}", batch, T0, start, out) for i in range(n_workers)]
    procs = [ctx.Process(target=drain_in_process, args=a) for a in args]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    return results


def _claim_in_threads(backend: Backend, n_workers: int, batch: int) -> list[list[str]]:
    """Drain the store from ``n_workers`` threads sharing one handle, while another thread
    keeps renewing every lease, as a worker's heartbeat does."""
    barrier = threading.Barrier(n_workers)
    results: list[list[str]] = []
    done = threading.Event()

    def claimer(worker_id: str) -> None:
        barrier.wait()
        results.append(drain(backend, worker_id, batch, T0))

    def heartbeat() -> None:
        while not done.is_set():
            for worker_id in (f"w{i}" for i in range(n_workers)):
                leases = backend.expired(T0 + TTL, 100)
                keys = [LeaseKey(x.task_id, x.attempt) for x in leases if x.worker_id == worker_id]
                backend.renew(worker_id, keys, TTL, T0)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(n_workers)]
    pulse = threading.Thread(target=heartbeat)
    pulse.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    pulse.join(timeout=10)
    return results


def _check_drained(backend: Backend, results: list[list[str]], ids: list[str]) -> None:
    claimed = Counter(tid for result in results for tid in result)
    assert sorted(claimed) == sorted(ids)
    assert set(claimed.values()) == {1}, "some task was claimed twice"
    assert backend.counts("a") == Counts(succeeded=1200)
    assert backend.counts("b") == Counts(succeeded=800)
    assert all(r.result == r.task_id.encode() for r in backend.tasks(ids))
    assert len(backend.finished("a", 0, 5000)) == 1200


def test_claimers_in_processes_get_every_task_exactly_once(backend: Backend) -> None:
    if not backend.capabilities.is_shared:
        pytest.skip("not shared between processes (the thread test covers it)")
    ids = open_session(backend, "a", n=1200) + open_session(backend, "b", n=800)
    _check_drained(backend, _claim_in_processes(backend, n_workers=4, batch=7), ids)


def test_claimers_in_threads_get_every_task_exactly_once(backend: Backend) -> None:
    ids = open_session(backend, "a", n=1200) + open_session(backend, "b", n=800)
    _check_drained(backend, _claim_in_threads(backend, n_workers=4, batch=7), ids)


def test_higher_priority_is_served_first(backend: Backend) -> None:
    low = open_session(backend, "low", n=4, priority=0)
    high = open_session(backend, "high", n=3, priority=5, now=T0 + 1)
    first = backend.claim("w", 2, TTL, T0 + 2)
    assert [c.task_id for c in first] == high[:2]
    second = backend.claim("w", 3, TTL, T0 + 3)
    assert [c.task_id for c in second] == [high[2], low[0], low[1]]


def test_lower_priority_gets_nothing_while_higher_has_enough(backend: Backend) -> None:
    open_session(backend, "low", n=50, priority=-1)
    open_session(backend, "high", n=50, priority=1)
    for i in range(5):
        claims = backend.claim("w", 10, TTL, T0 + i)
        assert {c.session_id for c in claims} == {"high"}
    assert {c.session_id for c in backend.claim("w", 10, TTL, T0 + 9)} == {"low"}


def test_a_small_late_session_is_served_by_the_very_next_claim(backend: Backend) -> None:
    open_session(backend, "big", n=1000)
    backend.claim("w", 10, TTL, T0 + 1)  # big has been served
    small = open_session(backend, "small", n=3, now=T0 + 2)

    [one] = backend.claim("w", 1, TTL, T0 + 3)
    assert one.task_id == small[0]

    both = Counter(c.session_id for c in backend.claim("w", 10, TTL, T0 + 4))
    assert both == {"small": 2, "big": 8}


def test_equal_sessions_share_a_claim_equally(backend: Backend) -> None:
    for session_id in ("a", "b", "c"):
        open_session(backend, session_id, n=100)
    shares = Counter(c.session_id for c in backend.claim("w", 30, TTL, T0))
    assert shares == {"a": 10, "b": 10, "c": 10}


def test_fair_share_alternates_the_remainder(backend: Backend) -> None:
    open_session(backend, "a", n=100)
    open_session(backend, "b", n=100)
    taken: Counter[str] = Counter()
    for i in range(10):
        taken.update(c.session_id for c in backend.claim("w", 1, TTL, T0 + i))
    assert taken == {"a": 5, "b": 5}


def test_claims_within_a_session_are_oldest_first_across_batches(backend: Backend) -> None:
    open_session(backend, "s")
    first = backend.submit("s", new_tasks(3), T0)
    second = backend.submit("s", new_tasks(3, prefix=b"q"), T0 + 1)
    claims = backend.claim("w", 6, TTL, T0 + 2)
    assert [c.task_id for c in claims] == first + second
    assert [c.payload for c in claims] == [b"p0", b"p1", b"p2", b"q0", b"q1", b"q2"]
