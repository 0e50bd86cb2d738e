"""Durable backends lose nothing when every handle is closed and the store opened again;
shared ones show each handle what the others wrote."""

from __future__ import annotations

import pytest

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.backends.registry import open_backend
from htcgrid.core.model import Counts, NewTask, SessionSpec
from htcgrid.core.states import TaskState

from .helpers import HANDLER, T0, TTL, claim_all, fail, open_session, succeed


def _everything(backend: Backend, session_ids: list[str], ids: list[str]) -> object:
    """All a client can observe of these sessions."""
    return (
        backend.list_sessions(),
        [backend.counts(s) for s in session_ids],
        backend.tasks(ids),
        [backend.finished(s, 0, 1000) for s in session_ids],
        backend.expired(T0 + 1e9, 1000),
    )


def test_reopening_loses_nothing(backend: Backend) -> None:
    if not backend.capabilities.is_durable:
        pytest.skip("not a durable backend")
    ids = open_session(backend, "s", n=6, max_attempts=2, retry_backoff_s=50.0, priority=2)
    backend.create_session("done", SessionSpec(name="cancelled one"), T0)
    ids += backend.submit("done", [NewTask(handler=HANDLER, payload=b"\x00\xff")], T0)
    backend.blobs.put("s/output-1", b"blob")
    a, b, c, d, _ = backend.claim("w", 5, TTL, T0)
    backend.complete([succeed(a, b"\x00result"), fail(b), succeed(c, None, "s/output-1")], T0)
    backend.cancel("done", None, T0 + 1)
    before = _everything(backend, ["s", "done"], ids)
    url = backend.url
    backend.close()

    again = open_backend(url)
    try:
        assert _everything(again, ["s", "done"], ids) == before
        assert again.blobs.get("s/output-1") == b"blob"
        assert again.get_session("done").is_cancelled is True
        # the store goes on where it stopped: ids, leases, retries, the finished stream
        assert again.submit("s", [NewTask(handler=HANDLER)], T0 + 2) == ["s.6"]
        assert again.renew("w", [LeaseKey(d.task_id, 1)], TTL, T0 + 2) == [True]
        assert again.complete([succeed(d)], T0 + 3) == [True]
        assert [x.task_id for x in claim_all(again, now=T0 + 3)] == ["s.5", "s.6"]
        [retry] = claim_all(again, now=T0 + 100)
        assert (retry.task_id, retry.attempt) == (b.task_id, 2)
        assert [r.done_seq for r in again.finished("s", 0, 100)] == [1, 2, 3]
        assert again.counts("s") == Counts(running=4, succeeded=3)
        assert again.tasks([a.task_id])[0].state is TaskState.SUCCEEDED
    finally:
        again.close()


def test_another_handle_sees_every_write(backend: Backend) -> None:
    if not backend.capabilities.is_shared:
        pytest.skip("not shared between processes")
    other = open_backend(backend.url)
    try:
        ids = open_session(backend, "s", n=3)
        assert other.counts("s") == Counts(pending=3)
        [c] = other.claim("w", 1, TTL, T0)
        assert backend.counts("s") == Counts(pending=2, running=1)
        assert backend.complete([succeed(c, b"r")], T0) == [True]
        assert other.tasks(ids[:1])[0].result == b"r"
        assert other.complete([succeed(c, b"late")], T0) == [False]
    finally:
        other.close()
