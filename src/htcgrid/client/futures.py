"""Futures for tasks, resolved by one collector thread per session that streams finished tasks."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, RUNNING
from typing import Any

from htcgrid.backends.base import ClientStore
from htcgrid.client.payloads import outcome
from htcgrid.core.errors import BackendUnavailable
from htcgrid.core.model import TaskRecord

log = logging.getLogger(__name__)

_RUNNING: str = RUNNING
_FINISHED: str = FINISHED
_CANCELLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})


class TaskFuture(concurrent.futures.Future[Any]):
    """A :class:`concurrent.futures.Future` for one task, named by its stable ``task_id``.

    The futures of one session share one condition (``Future`` makes one per future: a lock
    and a condition per task, a tenth of a client's CPU per no-op task), so waiting loops
    until its own future is done: a wake-up may be for another task.
    """

    def __init__(self, task_id: str, condition: threading.Condition | None = None) -> None:
        # Future.__init__ would build a condition per future; the rest is the same state,
        # already RUNNING: a submitted task is running as far as Future is concerned
        self._condition = condition or threading.Condition()
        self._state = _RUNNING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[Any]], object]] = []
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"<TaskFuture {self.task_id} {self._state.lower()}>"

    def result(self, timeout: float | None = None) -> Any:
        """The task's value, or raise its exception (TimeoutError after ``timeout``)."""
        self._wait_done(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception, or None if it succeeded (TimeoutError after ``timeout``)."""
        self._wait_done(timeout)
        return self._exception

    def _wait_done(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                if self._state in _CANCELLED:
                    raise concurrent.futures.CancelledError()
                if self._state == _FINISHED:
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError()
                self._condition.wait(left)


class Collector:
    """Streams a session's finished tasks (``ClientStore.finished``) and resolves their futures.

    Futures are registered under ``lock`` together with the submit that created their tasks,
    and records are dispatched under the same lock, so a task that finishes before its future
    is registered is never missed.
    """

    def __init__(self, backend: ClientStore, session_id: str, page: int = 2000) -> None:
        self.backend = backend
        self.session_id = session_id
        self.page = page
        self.lock = threading.Lock()
        #: shared by the session's futures (see TaskFuture)
        self.condition = threading.Condition()
        self._futures: dict[str, TaskFuture] = {}
        self._cursor = 0
        self._is_caught_up = False  # the last page was short: nothing more was finished
        self._wake = threading.Condition(self.lock)
        self._is_closed = False
        self._thread: threading.Thread | None = None

    def register(self, futures: list[TaskFuture]) -> None:
        """Track ``futures``; call with ``lock`` held, in the same critical section as submit."""
        for f in futures:
            self._futures[f.task_id] = f
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"htcgrid-collector-{self.session_id}", daemon=True
            )
            self._thread.start()
        self._wake.notify_all()

    @property
    def unresolved(self) -> list[str]:
        """Ids of the tasks whose futures are still waiting, in submission order."""
        with self.lock:
            return list(self._futures)

    def close(self) -> None:
        with self.lock:
            self._is_closed = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self._futures and not self._is_closed:
                    self._wake.wait()
                if self._is_closed:
                    return
            try:
                self._poll()
            except BackendUnavailable as exc:  # a store restart: wait it out, never die
                log.warning("collecting results of %s: %s; retrying", self.session_id, exc)
                self._pause(0.5)
            except Exception:
                log.exception("collecting results of session %s failed; retrying", self.session_id)
                self._pause(0.5)

    def _pause(self, seconds: float) -> None:
        """Back off without touching the store (it may be what failed); close() interrupts."""
        with self.lock:
            if not self._is_closed:
                self._wake.wait(seconds)

    def _poll(self) -> None:
        if self._is_caught_up:
            # wait first: it returns at once if something finished meanwhile, and through
            # the HTTP API the long-poll brings the page itself (one request, not two)
            self.backend.wait_for_finished(self.session_id, self._cursor, 0.2)
        records = self.backend.finished(self.session_id, self._cursor, self.page)
        self._is_caught_up = len(records) < self.page
        if not records:
            return
        with self.lock:
            resolved = [(self._futures.pop(r.task_id, None), r) for r in records]
            last = records[-1].done_seq
            self._cursor = last if last is not None else self._cursor + len(records)
        for future, record in resolved:
            if future is not None:
                self._resolve(future, record)

    def _resolve(self, future: TaskFuture, record: TaskRecord) -> None:
        try:
            ok, value = outcome(record, self.backend.blobs)
        except Exception as exc:  # a result that cannot be decoded fails its future only
            future.set_exception(exc)
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
