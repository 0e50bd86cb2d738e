"""A session: a group of tasks with shared defaults, submitted and collected in batches."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

from htcgrid.backends.base import ClientStore
from htcgrid.client.futures import Collector, TaskFuture
from htcgrid.client.payloads import Handler, HandlerRefs, new_task, outcome
from htcgrid.client.reconnect import retrying
from htcgrid.codec import Args
from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import Codec, Counts, SessionInfo, TaskRecord
from htcgrid.core.states import TaskState

#: Tasks per submit round trip.
SUBMIT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What :meth:`Session.wait` saw: counts per state and the tasks not finished yet."""

    is_done: bool
    counts: Counts
    unfinished: list[str]  # ids of this client's tasks still pending or running

    def __repr__(self) -> str:
        shown = ", ".join(self.unfinished[:3]) + (", ..." if len(self.unfinished) > 3 else "")
        return (
            f"WaitResult(is_done={self.is_done}, counts={self.counts.as_dict()}, "
            f"unfinished={len(self.unfinished)} [{shown}])"
        )


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One finished task from :meth:`Session.results`: its value, or the exception it raised."""

    task_id: str
    state: TaskState
    value: Any = None
    error: BaseException | None = None

    @property
    def is_ok(self) -> bool:
        return self.state is TaskState.SUCCEEDED


class Session:
    """Submit tasks and collect their results. Use :meth:`Grid.session` to make one."""

    def __init__(
        self,
        backend: ClientStore,
        info: SessionInfo,
        *,
        codec: Codec = Codec.PICKLE,
        inline_limit: int,
    ) -> None:
        self.backend = backend
        self.session_id = info.session_id
        self.spec = info.spec
        self.codec = codec
        self.inline_limit = inline_limit
        self._refs = HandlerRefs(self.session_id, backend.blobs)
        self._collector = Collector(backend, self.session_id)

    def __repr__(self) -> str:
        return f"<Session {self.session_id}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting -----------------------------------------------------------------------
    def submit(self, fn: Handler, *args: Any, **kwargs: Any) -> TaskFuture:
        """Submit one task running ``fn(*args, **kwargs)``; return its future."""
        value = args[0] if len(args) == 1 and not kwargs else Args(args, kwargs)
        return self.submit_many(fn, [value])[0]

    def submit_many(
        self, fn: Handler, inputs: Iterable[Any], *, timeout_s: float | None = None
    ) -> list[TaskFuture]:
        """Submit one task per input, ``fn(input)``, in batches; return futures in order."""
        ref = self._refs.ref(fn)
        futures: list[TaskFuture] = []
        it = iter(inputs)
        while batch := list(islice(it, SUBMIT_BATCH)):
            futures.extend(self._submit_batch(ref, batch, timeout_s))
        return futures

    def _submit_batch(
        self, ref: str, values: Sequence[Any], timeout_s: float | None
    ) -> list[TaskFuture]:
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidInput(f"timeout_s must be positive, not {timeout_s}")
        tasks = [
            new_task(
                ref,
                v,
                self.codec,
                session_id=self.session_id,
                blobs=self.backend.blobs,
                inline_limit=self.inline_limit,
                timeout_s=timeout_s,
            )
            for v in values
        ]
        key = uuid.uuid4().hex  # the same key on every retry: a lost answer adds no duplicates
        with self._collector.lock:
            ids = retrying(
                lambda: self.backend.submit(self.session_id, tasks, time.time(), batch_key=key),
                f"submit to {self.session_id}",
            )
            condition = self._collector.condition
            futures = [TaskFuture(tid, condition) for tid in ids]
            self._collector.register(futures)
        return futures

    def map(self, fn: Handler, inputs: Iterable[Any], *, window: int = 20_000) -> Iterator[Any]:
        """Yield ``fn(input)`` for each input, in input order, keeping at most ``window`` tasks
        in flight so inputs and results stream instead of being held all at once.

        Raises the first failed task's exception when its turn comes.
        """
        ref = self._refs.ref(fn)
        it = iter(inputs)
        in_flight: deque[TaskFuture] = deque()
        batch = max(1, min(SUBMIT_BATCH, window // 2))
        is_exhausted = False
        while True:
            while not is_exhausted and len(in_flight) + batch <= max(window, batch):
                values = list(islice(it, batch))
                if not values:
                    is_exhausted = True
                    break
                in_flight.extend(self._submit_batch(ref, values, None))
            if not in_flight:
                return
            yield in_flight.popleft().result()

    # -- collecting -----------------------------------------------------------------------
    def as_completed(
        self, futures: Iterable[TaskFuture], timeout: float | None = None
    ) -> Iterator[TaskFuture]:
        """Yield ``futures`` as their tasks finish (see :func:`concurrent.futures.as_completed`)."""
        for f in concurrent.futures.as_completed(list(futures), timeout=timeout):
            assert isinstance(f, TaskFuture)
            yield f

    def results(self, *, timeout: float | None = None, page: int = 2000) -> Iterator[TaskResult]:
        """Stream every finished task of the session, in the order they finished, until all
        submitted tasks are finished (or ``timeout`` passes: then TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = 0
        while True:
            read = partial(self.backend.finished, self.session_id, cursor, page)
            records = retrying(read, "results")
            for record in records:
                yield self.result_of(record)
            if records:
                cursor = records[-1].done_seq or cursor + len(records)
                continue
            counts = self.backend.counts(self.session_id)
            if counts.finished <= cursor and counts.pending + counts.running == 0:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"session {self.session_id}: {counts.as_dict()}")
            self.backend.wait_for_finished(self.session_id, cursor, min(left or 1.0, 1.0))

    def result_of(self, record: TaskRecord) -> TaskResult:
        """Decode a stored record of this session into a :class:`TaskResult`."""
        ok, value = outcome(record, self.backend.blobs)
        if ok:
            return TaskResult(record.task_id, record.state, value=value)
        return TaskResult(record.task_id, record.state, error=value)

    def get(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Results of the given tasks, None for those not finished yet."""
        return [
            self.result_of(r) if r.state.is_terminal else None for r in self.backend.tasks(task_ids)
        ]

    def counts(self) -> Counts:
        """Tasks of the session per state, from the store."""
        return retrying(lambda: self.backend.counts(self.session_id), "counts")

    def wait(self, timeout: float | None = None) -> WaitResult:
        """Block until every task of the session is finished or ``timeout`` seconds pass;
        say exactly what is still unfinished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self.counts()
            is_done = counts.pending + counts.running == 0
            left = None if deadline is None else deadline - time.monotonic()
            if is_done or (left is not None and left <= 0):
                return WaitResult(is_done, counts, [] if is_done else self._collector.unresolved)
            self.backend.wait_for_finished(self.session_id, counts.finished, min(left or 0.5, 0.5))

    # -- control --------------------------------------------------------------------------
    def cancel(self, task_ids: Sequence[str] | None = None) -> int:
        """Cancel the session (or only ``task_ids``): pending tasks never run, running ones are
        stopped on their workers, finished ones are untouched. Return how many were cancelled."""
        return retrying(
            lambda: self.backend.cancel(self.session_id, task_ids, time.time()), "cancel"
        )

    def info(self) -> SessionInfo:
        return self.backend.get_session(self.session_id)

    def close(self) -> None:
        """Stop collecting results; the session and its tasks stay in the store."""
        self._collector.close()
