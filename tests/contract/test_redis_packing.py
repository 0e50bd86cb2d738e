"""The Redis backend's packed script arguments: what the rest of the suite does not reach.

SUBMIT, END_ATTEMPTS and RENEW take a whole batch as a msgpack head plus one string of
concatenated bytes (docs/redis.md, *Scripts*). These tests cover the parts of that framing
the port-level suite exercises only in passing: several codecs in one submit, outcomes of
very different sizes cut from one string, times that must survive msgpack exactly, batch
keys outside ASCII, and task ids checked without the regular expression on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from msgspec.structs import replace

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import Codec, Counts, FailureKind, NewTask, SessionSpec
from htcgrid.core.states import TaskState
from tests.stores import open_store
from tests.stores.redis import server_url

from .helpers import HANDLER, T0, TTL, error, fail, new_tasks, open_session, succeed


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    store = open_store("redis", tmp_path)
    yield store
    store.close()


def test_one_submit_may_mix_codecs(backend: Backend) -> None:
    open_session(backend, "s")
    codecs = [Codec.RAW, Codec.MSGPACK, Codec.RAW, Codec.PICKLE, Codec.MSGPACK]
    tasks = [
        NewTask(handler=HANDLER, codec=codec, payload=b"%d" % i, timeout_s=float(i) or None)
        for i, codec in enumerate(codecs)
    ]
    ids = backend.submit("s", tasks, T0)
    assert [r.codec for r in backend.tasks(ids)] == codecs
    default = SessionSpec().timeout_s
    claims = backend.claim("w", 10, TTL, T0)
    assert [(c.codec, c.payload, c.timeout_s) for c in claims] == [
        (t.codec, t.payload, default if t.timeout_s is None else t.timeout_s) for t in tasks
    ]


def test_outcomes_of_any_size_reach_their_own_tasks(backend: Backend) -> None:
    ids = open_session(backend, "s", n=4)
    claims = backend.claim("w", 4, TTL, T0)
    results = [b"", b"x" * 70_000, b"\x00\xff" * 3, "é".encode()]
    done = [succeed(c, result) for c, result in zip(claims, results, strict=True)]
    assert backend.complete(done, T0 + 1) == [True] * 4
    assert [r.result for r in backend.tasks(ids)] == results


def test_a_batch_across_sessions_keeps_the_callers_order(backend: Backend) -> None:
    open_session(backend, "a", n=2)
    open_session(backend, "b", n=2)
    claims = sorted(backend.claim("w", 4, TTL, T0), key=lambda c: c.task_id)
    a0, a1, b0, b1 = claims
    stale = replace(succeed(a1), attempt=9)  # fenced out
    batch = [succeed(b1, b"b1"), stale, succeed(a0, b"a0"), fail(b0)]
    assert backend.complete(batch, T0 + 1) == [True, False, True, True]
    assert backend.counts("a") == Counts(running=1, succeeded=1)
    assert backend.counts("b") == Counts(pending=1, succeeded=1)


def test_a_retry_time_survives_the_trip_exactly(backend: Backend) -> None:
    open_session(backend, "s", n=1, max_attempts=3)
    [c] = backend.claim("w", 1, TTL, T0)
    not_before = T0 + 0.1 + 2**-30  # neither a short decimal nor a float32
    assert backend.complete([replace(fail(c, now=T0), not_before=not_before)], T0) == [True]
    assert backend.claim("w", 1, TTL, T0 + 0.1) == []  # a hair before it
    [again] = backend.claim("w", 1, TTL, not_before)
    assert again.attempt == 2
    assert again.lease.lease_expiry == not_before + TTL


def test_renewals_answer_per_lease_in_the_callers_order(backend: Backend) -> None:
    open_session(backend, "a", n=2)
    open_session(backend, "b", n=1)
    claims = sorted(backend.claim("w", 3, TTL, T0), key=lambda c: c.task_id)
    keys = [LeaseKey(c.task_id, c.attempt) for c in claims]
    keys.insert(1, LeaseKey(claims[2].task_id, 7))  # an attempt that does not hold it
    assert backend.renew("w", keys, TTL, T0 + 1) == [True, False, True, True]
    assert backend.renew("other", keys[:1], TTL, T0 + 1) == [False]


def test_a_batch_key_outside_ascii_is_idempotent(backend: Backend) -> None:
    open_session(backend, "s")
    first = backend.submit("s", new_tasks(3), T0, batch_key="lot-é-日本")
    again = backend.submit("s", new_tasks(3), T0, batch_key="lot-é-日本")
    assert first == again
    assert backend.counts("s") == Counts(pending=3)


@pytest.mark.parametrize("tid", ["s.01", "s.-1", "s.+1", "s.1_0", "s.\u0661", "s.", ".1", "s 1"])
def test_malformed_task_ids_are_refused_before_anything_is_applied(
    backend: Backend, tid: str
) -> None:
    open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    good = succeed(c)
    bad = type(good)(task_id=tid, worker_id="w", attempt=1, state=TaskState.SUCCEEDED)
    with pytest.raises(InvalidInput):
        backend.complete([good, bad], T0 + 1)
    with pytest.raises(InvalidInput):
        backend.renew("w", [LeaseKey(c.task_id, 1), LeaseKey(tid, 1)], TTL, T0 + 1)
    assert backend.counts("s") == Counts(running=1)


def test_a_drained_session_is_served_again_after_a_new_submit(backend: Backend) -> None:
    open_session(backend, "s", n=2)
    assert len(backend.claim("w", 5, TTL, T0)) == 2  # drains it: it leaves the ready set
    assert backend.claim("w", 5, TTL, T0) == []
    [tid] = backend.submit("s", new_tasks(1), T0)
    assert [c.task_id for c in backend.claim("w", 5, TTL, T0)] == [tid]


def test_a_failure_counts_on_its_own_counter(backend: Backend) -> None:
    ids = open_session(backend, "s", n=1, max_attempts=3)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([fail(c, FailureKind.TIMEOUT)], T0)
    [c] = backend.claim("w", 1, TTL, T0 + 100)
    backend.complete([fail(c, FailureKind.ERROR, now=T0 + 100)], T0 + 100)
    [record] = backend.tasks(ids)
    assert (record.n_timeouts, record.n_errors, record.n_lost) == (1, 1, 0)
    assert record.error == error()


def test_a_flushed_script_cache_is_reloaded_and_only_the_failed_calls_resent(
    backend: Backend,
) -> None:
    """The server forgets scripts on a restart or SCRIPT FLUSH: the batch's error replies
    (NOSCRIPT) come back in their places, the scripts are loaded and those calls resent."""
    open_session(backend, "a", n=2)
    open_session(backend, "b", n=2)
    with redis.Redis.from_url(server_url()) as admin:
        admin.script_flush()
    claims = backend.claim("w", 4, TTL, T0)  # one CLAIM per session, in one batch
    assert len(claims) == 4
    with redis.Redis.from_url(server_url()) as admin:
        admin.script_flush()
    assert backend.complete([succeed(c) for c in claims], T0 + 1) == [True] * 4
    assert backend.counts("a") == Counts(succeeded=2)
    assert backend.counts("b") == Counts(succeeded=2)
