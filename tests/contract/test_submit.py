"""Submitting: ids in order, all or nothing, refused when the session cannot take tasks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import pytest

from htcgrid.backends.base import Backend
from htcgrid.core.errors import InvalidInput, NotFound
from htcgrid.core.model import Counts, NewTask

from .helpers import HANDLER, T0, assert_counts_exact, new_tasks, open_session


def test_ids_name_the_session_and_count_up_across_batches(backend: Backend) -> None:
    open_session(backend, "s")
    assert backend.submit("s", new_tasks(3), T0) == ["s.0", "s.1", "s.2"]
    assert backend.submit("s", new_tasks(2), T0) == ["s.3", "s.4"]
    assert backend.counts("s") == Counts(pending=5)


def test_ids_are_per_session(backend: Backend) -> None:
    open_session(backend, "a")
    open_session(backend, "b")
    assert backend.submit("a", new_tasks(2), T0) == ["a.0", "a.1"]
    assert backend.submit("b", new_tasks(1), T0) == ["b.0"]


def test_an_empty_batch_adds_nothing(backend: Backend) -> None:
    open_session(backend, "s")
    assert backend.submit("s", [], T0) == []
    assert backend.counts("s") == Counts()
    assert backend.submit("s", new_tasks(1), T0) == ["s.0"]


def test_records_start_pending_with_no_attempt(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    for record, tid in zip(backend.tasks(ids), ids, strict=True):
        assert record.task_id == tid
        assert record.session_id == "s"
        assert record.state.label == "pending"
        assert (record.attempt, record.n_errors, record.n_timeouts, record.n_lost) == (0, 0, 0, 0)
        assert record.submitted_at == T0
        assert record.finished_at is None
        assert record.done_seq is None
        assert record.result is None and record.error is None


def test_a_large_batch_is_accepted_whole(backend: Backend) -> None:
    open_session(backend, "s")
    ids = backend.submit("s", new_tasks(10_000), T0)
    assert len(ids) == 10_000
    assert ids[-1] == "s.9999"
    assert backend.counts("s") == Counts(pending=10_000)


def test_unknown_session_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.submit("nope", new_tasks(1), T0)


def test_a_cancelled_session_takes_no_tasks(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    backend.cancel("s", None, T0)
    with pytest.raises(InvalidInput):
        backend.submit("s", new_tasks(3), T0)
    with pytest.raises(InvalidInput):
        backend.submit("s", [], T0)
    assert backend.counts("s") == Counts(cancelled=2)
    assert_counts_exact(backend, "s", ids)


def test_cancelling_some_tasks_keeps_the_session_open(backend: Backend) -> None:
    ids = open_session(backend, "s", n=2)
    backend.cancel("s", ids[:1], T0)
    assert backend.submit("s", new_tasks(1), T0) == ["s.2"]


class _BreaksHalfway(Sequence[NewTask]):
    """A batch whose reading fails part way through, like a generator of tasks that raises."""

    def __init__(self, tasks: list[NewTask], fail_at: int) -> None:
        self._tasks = tasks
        self._fail_at = fail_at

    def __len__(self) -> int:
        return len(self._tasks)

    @overload
    def __getitem__(self, i: int) -> NewTask: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[NewTask]: ...
    def __getitem__(self, i: int | slice) -> NewTask | Sequence[NewTask]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i >= self._fail_at:
            raise _Broken(f"task {i} cannot be read")
        return self._tasks[i]

    def __iter__(self) -> Iterator[NewTask]:
        for i in range(len(self)):
            yield self[i]


class _Broken(Exception):
    pass


def test_a_batch_that_fails_part_way_adds_nothing(backend: Backend) -> None:
    open_session(backend, "s", n=2)
    with pytest.raises(_Broken):
        backend.submit("s", _BreaksHalfway(new_tasks(10), fail_at=5), T0)
    assert backend.counts("s") == Counts(pending=2)
    assert backend.submit("s", new_tasks(1), T0) == ["s.2"]
    assert len(backend.claim("w", 100, 30.0, T0)) == 3


def test_task_timeout_overrides_the_session_default(backend: Backend) -> None:
    open_session(backend, "s", timeout_s=7.0)
    open_session(backend, "none")
    backend.submit("s", [NewTask(handler=HANDLER), NewTask(handler=HANDLER, timeout_s=1.5)], T0)
    backend.submit("none", [NewTask(handler=HANDLER)], T0)
    timeouts = {c.task_id: c.timeout_s for c in backend.claim("w", 10, 30.0, T0)}
    assert timeouts == {"s.0": 7.0, "s.1": 1.5, "none.0": None}


def test_a_retried_batch_key_returns_the_first_ids_and_adds_nothing(backend: Backend) -> None:
    open_session(backend, "s")
    first = backend.submit("s", new_tasks(3), T0, batch_key="k1")
    again = backend.submit("s", new_tasks(3), T0, batch_key="k1")
    assert again == first == ["s.0", "s.1", "s.2"]
    assert backend.counts("s") == Counts(pending=3)
    assert backend.submit("s", new_tasks(1), T0, batch_key="k2") == ["s.3"]
    assert backend.counts("s") == Counts(pending=4)


def test_batch_keys_are_per_session(backend: Backend) -> None:
    open_session(backend, "a")
    open_session(backend, "b")
    assert backend.submit("a", new_tasks(1), T0, batch_key="k") == ["a.0"]
    assert backend.submit("b", new_tasks(2), T0, batch_key="k") == ["b.0", "b.1"]


def test_a_batch_key_reused_for_another_batch_size_is_refused(backend: Backend) -> None:
    open_session(backend, "s")
    backend.submit("s", new_tasks(2), T0, batch_key="k")
    with pytest.raises(InvalidInput, match="new key"):
        backend.submit("s", new_tasks(5), T0, batch_key="k")
    assert backend.counts("s") == Counts(pending=2)


def test_a_retried_batch_is_answered_even_after_the_session_is_cancelled(
    backend: Backend,
) -> None:
    open_session(backend, "s")
    ids = backend.submit("s", new_tasks(2), T0, batch_key="k")
    backend.cancel("s", None, T0)
    assert backend.submit("s", new_tasks(2), T0, batch_key="k") == ids
    with pytest.raises(InvalidInput, match="cancelled"):
        backend.submit("s", new_tasks(2), T0, batch_key="other")
