"""The finished stream: tasks in the order they finished, paged by done_seq."""

from __future__ import annotations

from htcgrid.backends.base import Backend
from htcgrid.core.model import TaskRecord

from .helpers import T0, TTL, fail, open_session, succeed


def _stream(backend: Backend, session_id: str, page: int) -> list[TaskRecord]:
    """Read the whole stream ``page`` records at a time, as a client does."""
    out: list[TaskRecord] = []
    after = 0
    while records := backend.finished(session_id, after, page):
        assert len(records) <= page
        out.extend(records)
        after = records[-1].done_seq or 0
    return out


def test_tasks_stream_in_the_order_they_finished(backend: Backend) -> None:
    ids = open_session(backend, "s", n=10, max_attempts=1)
    claims = {c.task_id: c for c in backend.claim("w", 10, TTL, T0)}
    order = [ids[i] for i in (7, 2, 9, 0, 5, 1, 8, 3, 6, 4)]
    for n, tid in enumerate(order):  # one by one, in separate batches
        outcome = fail(claims[tid]) if n % 3 == 0 else succeed(claims[tid], tid.encode())
        assert backend.complete([outcome], T0 + n) == [True]
    whole = backend.finished("s", 0, 100)
    assert [r.task_id for r in whole] == order
    assert [r.done_seq for r in whole] == list(range(1, 11))
    assert [r.finished_at for r in whole] == [T0 + n for n in range(10)]
    for page in (1, 3, 4, 10):
        assert _stream(backend, "s", page) == whole


def test_a_batch_finishes_in_batch_order(backend: Backend) -> None:
    ids = open_session(backend, "s", n=5)
    claims = backend.claim("w", 5, TTL, T0)
    backend.complete([succeed(c) for c in reversed(claims)], T0)
    assert [r.task_id for r in backend.finished("s", 0, 10)] == list(reversed(ids))


def test_after_and_limit_select_a_window(backend: Backend) -> None:
    ids = open_session(backend, "s", n=6)
    backend.complete([succeed(c) for c in backend.claim("w", 6, TTL, T0)], T0)
    assert [r.task_id for r in backend.finished("s", 2, 3)] == ids[2:5]
    assert [r.done_seq for r in backend.finished("s", 4, 100)] == [5, 6]
    assert backend.finished("s", 6, 100) == []
    assert backend.finished("s", 100, 100) == []
    assert backend.finished("s", 0, 0) == []


def test_the_stream_grows_while_it_is_read(backend: Backend) -> None:
    ids = open_session(backend, "s", n=4)
    a, b, c, d = backend.claim("w", 4, TTL, T0)
    backend.complete([succeed(a), succeed(b)], T0)
    first = backend.finished("s", 0, 10)
    backend.complete([succeed(c), succeed(d)], T0 + 1)
    rest = backend.finished("s", first[-1].done_seq or 0, 10)
    assert [r.task_id for r in first + rest] == ids


def test_streams_are_per_session(backend: Backend) -> None:
    a_ids = open_session(backend, "a", n=2)
    b_ids = open_session(backend, "b", n=2)
    claims = backend.claim("w", 4, TTL, T0)
    backend.complete([succeed(c) for c in claims], T0)
    assert [r.task_id for r in backend.finished("a", 0, 10)] == a_ids
    assert [r.task_id for r in backend.finished("b", 0, 10)] == b_ids
    assert [r.done_seq for r in backend.finished("b", 0, 10)] == [1, 2]


def test_retries_and_running_tasks_are_not_in_the_stream(backend: Backend) -> None:
    open_session(backend, "s", n=3, max_attempts=2)
    a, b, _ = backend.claim("w", 3, TTL, T0)
    backend.complete([fail(a), succeed(b)], T0)
    assert [r.task_id for r in backend.finished("s", 0, 10)] == [b.task_id]
