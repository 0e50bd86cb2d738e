"""Sessions: create, get, list, delete, and NotFound for ids the store does not hold."""

from __future__ import annotations

import pytest

from htcgrid.backends.base import Backend
from htcgrid.core.errors import InvalidInput, NotFound
from htcgrid.core.model import Counts, SessionSpec

from .helpers import T0, claim_all, new_tasks, open_session, succeed


def test_create_then_get_returns_the_spec_and_zero_counts(backend: Backend) -> None:
    spec = SessionSpec(priority=3, max_attempts=5, timeout_s=2.5, retry_backoff_s=0.5, name="n")
    created = backend.create_session("s", spec, T0)
    got = backend.get_session("s")
    assert created == got
    assert got.spec == spec
    assert got.created_at == T0
    assert got.is_cancelled is False
    assert got.counts == Counts()


def test_a_taken_session_id_is_refused(backend: Backend) -> None:
    open_session(backend, "s", n=2)
    with pytest.raises(InvalidInput):
        backend.create_session("s", SessionSpec(priority=9), T0)
    assert backend.get_session("s").spec.priority == 0
    assert backend.counts("s").pending == 2


def test_list_is_oldest_first(backend: Backend) -> None:
    for i, session_id in enumerate(["b", "c", "a"]):
        backend.create_session(session_id, SessionSpec(), T0 + i)
    assert [s.session_id for s in backend.list_sessions()] == ["b", "c", "a"]


def test_list_carries_counts(backend: Backend) -> None:
    open_session(backend, "s", n=3)
    [info] = backend.list_sessions()
    assert info.counts == Counts(pending=3)


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.get_session("nope"),
        lambda b: b.counts("nope"),
        lambda b: b.delete_session("nope"),
        lambda b: b.submit("nope", new_tasks(1), T0),
        lambda b: b.cancel("nope", None, T0),
        lambda b: b.cancel("nope", ["nope.0"], T0),
        lambda b: b.finished("nope", 0, 10),
        lambda b: b.tasks(["nope.0"]),
    ],
    ids=["get", "counts", "delete", "submit", "cancel", "cancel-some", "finished", "tasks"],
)
def test_unknown_session_is_not_found(backend: Backend, call: object) -> None:
    with pytest.raises(NotFound):
        call(backend)  # type: ignore[operator]


def test_unknown_task_is_not_found(backend: Backend) -> None:
    [tid] = open_session(backend, "s", n=1)
    with pytest.raises(NotFound):
        backend.tasks([tid, "s.1"])


def test_delete_removes_the_session_its_tasks_and_its_blobs(backend: Backend) -> None:
    ids = open_session(backend, "s", n=3)
    open_session(backend, "other", n=2)
    backend.blobs.put("s/input-1", b"data")
    backend.blobs.put("other/input-1", b"kept")

    backend.delete_session("s")

    with pytest.raises(NotFound):
        backend.get_session("s")
    with pytest.raises(NotFound):
        backend.tasks(ids[:1])
    with pytest.raises(NotFound):
        backend.blobs.get("s/input-1")
    assert [s.session_id for s in backend.list_sessions()] == ["other"]
    assert backend.counts("other") == Counts(pending=2)
    assert backend.blobs.get("other/input-1") == b"kept"


def test_delete_leaves_nothing_claimable_and_fences_running_attempts(backend: Backend) -> None:
    open_session(backend, "s", n=4)
    running = backend.claim("w", 2, 30.0, T0)
    backend.delete_session("s")
    assert backend.claim("w", 10, 30.0, T0) == []
    assert backend.complete([succeed(c) for c in running], T0) == [False, False]
    assert backend.expired(T0 + 1e6, 100) == []


def test_a_deleted_session_id_can_be_used_again_from_scratch(backend: Backend) -> None:
    open_session(backend, "s", n=3)
    claim_all(backend)
    backend.delete_session("s")
    ids = open_session(backend, "s", n=2)
    assert ids == ["s.0", "s.1"]
    assert backend.counts("s") == Counts(pending=2)
    assert backend.finished("s", 0, 10) == []
