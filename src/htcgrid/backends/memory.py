"""The reference backend: every operation on plain dicts under one lock, in one process.

It defines the port's behaviour for the conformance suite and serves tests that run a grid
inside one process. It is neither durable nor shared between processes.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from htcgrid.backends.base import Capabilities, LeaseKey, check_batch_size
from htcgrid.backends.blobs import MemoryBlobStore
from htcgrid.core.errors import InvalidInput, NotFound
from htcgrid.core.fairshare import Candidate, plan_claim
from htcgrid.core.ids import check_session_id, split_task_id, task_id
from htcgrid.core.model import (
    Claim,
    Completion,
    Counts,
    FailureKind,
    Lease,
    NewTask,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState, check_transition

_COUNTER_OF = {
    FailureKind.ERROR: "n_errors",
    FailureKind.REFUSED: "n_errors",
    FailureKind.TIMEOUT: "n_timeouts",
    FailureKind.LOST: "n_lost",
}


@dataclass
class _Task:
    index: int
    task: NewTask
    submitted_at: float
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    worker_id: str = ""
    lease_expiry: float = 0.0
    not_before: float = 0.0
    n_errors: int = 0
    n_timeouts: int = 0
    n_lost: int = 0
    done: Completion | None = None
    finished_at: float | None = None
    done_seq: int | None = None


@dataclass
class _Session:
    session_id: str
    spec: SessionSpec
    created_at: float
    is_cancelled: bool = False
    last_served: float = 0.0
    tasks: list[_Task] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # heap of indexes; stale ones skipped
    finished: list[int] = field(default_factory=list)  # task indexes by done_seq - 1
    counts: dict[TaskState, int] = field(default_factory=lambda: dict.fromkeys(TaskState, 0))
    batches: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (first, count)


class MemoryBackend:
    """In-process reference implementation of :class:`htcgrid.backends.base.Backend`."""

    capabilities = Capabilities(is_durable=False, is_shared=False, wait_sees_work=True)

    def __init__(self) -> None:
        self.url = "memory://"
        self.blobs = MemoryBlobStore()
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        with self._lock:
            check_session_id(session_id)
            if session_id in self._sessions:
                raise InvalidInput(f"session {session_id} already exists")
            s = self._sessions[session_id] = _Session(session_id, spec, now)
            return self._info(s)

    def get_session(self, session_id: str) -> SessionInfo:
        with self._lock:
            return self._info(self._session(session_id))

    def list_sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [self._info(s) for s in self._sessions.values()]

    def delete_session(self, session_id: str) -> None:
        with self._lock:
            self._session(session_id)
            del self._sessions[session_id]
        self.blobs.delete_session(session_id)

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        with self._changed:
            s = self._session(session_id)
            tasks = list(tasks)
            if batch_key is not None and batch_key in s.batches:
                first, count = s.batches[batch_key]
                check_batch_size(batch_key, count, len(tasks))
                return [task_id(session_id, i) for i in range(first, first + count)]
            if s.is_cancelled:
                raise InvalidInput(f"session {session_id} is cancelled; it takes no new tasks")
            first = len(s.tasks)
            new = [_Task(i, t, now) for i, t in enumerate(tasks, start=first)]
            if batch_key is not None:
                s.batches[batch_key] = (first, len(new))
            s.tasks.extend(new)
            s.pending.extend(t.index for t in new)  # ascending past every index already there
            s.counts[TaskState.PENDING] += len(new)
            self._changed.notify_all()
            return [task_id(session_id, i) for i in range(first, len(s.tasks))]

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        with self._lock:
            candidates = [
                Candidate(s.session_id, s.spec.priority, pending, s.last_served)
                for s in self._sessions.values()
                if (pending := s.counts[TaskState.PENDING])
            ]
            claims: list[Claim] = []
            for session_id, n in plan_claim(candidates, max_tasks):
                s = self._sessions[session_id]
                s.last_served = now
                for t in self._oldest_claimable(s, n, now):
                    claims.append(self._start(s, t, worker_id, now + lease_ttl_s))
            return claims

    def renew(
        self, worker_id: str, leases: Sequence[LeaseKey], lease_ttl_s: float, now: float
    ) -> list[bool]:
        with self._lock:
            held: list[bool] = []
            for key in leases:
                t = self._held(key.task_id, worker_id, key.attempt)
                if t is not None:
                    t.lease_expiry = now + lease_ttl_s
                held.append(t is not None)
            return held

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._apply(completions, now, require_expired=False)

    def expire(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._apply(completions, now, require_expired=True)

    def expired(self, now: float, limit: int) -> list[Lease]:
        with self._lock:
            running = [
                (s, t)
                for s in self._sessions.values()
                for t in s.tasks
                if t.state is TaskState.RUNNING and t.lease_expiry <= now
            ]
            running.sort(key=lambda st: st[1].lease_expiry)
            return [self._lease(s, t) for s, t in running[:limit]]

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        with self._changed:
            s = self._session(session_id)
            if task_ids is None:
                s.is_cancelled = True
                targets = s.tasks
            else:
                targets = [self._task(s, tid) for tid in task_ids]
            n = 0
            for t in targets:
                if t.state in (TaskState.PENDING, TaskState.RUNNING):
                    self._finish(s, t, TaskState.CANCELLED, None, now)
                    n += 1
            self._changed.notify_all()
            return n

    def counts(self, session_id: str) -> Counts:
        with self._lock:
            return self._counts(self._session(session_id))

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        with self._lock:
            records = []
            for tid in task_ids:
                session_id, _ = split_task_id(tid)
                s = self._session(session_id)
                records.append(self._record(s, self._task(s, tid)))
            return records

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        with self._lock:
            s = self._session(session_id)
            start = max(0, after)
            return [self._record(s, s.tasks[i]) for i in s.finished[start : start + limit]]

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_work(self, timeout_s: float) -> None:
        with self._changed:
            if not any(s.counts[TaskState.PENDING] for s in self._sessions.values()):
                self._changed.wait(timeout_s)

    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        with self._changed:
            s = self._sessions.get(session_id)
            if s is not None and len(s.finished) <= after:
                self._changed.wait(timeout_s)

    def close(self) -> None:
        """Nothing to release: the data lives as long as this object."""

    # -- internals (called with the lock held) --------------------------------------------
    def _session(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id}") from None

    def _task(self, s: _Session, tid: str) -> _Task:
        session_id, index = split_task_id(tid)
        if session_id != s.session_id or index >= len(s.tasks):
            raise NotFound(f"no task {tid}")
        return s.tasks[index]

    def _held(self, tid: str, worker_id: str, attempt: int) -> _Task | None:
        session_id, index = split_task_id(tid)
        s = self._sessions.get(session_id)
        if s is None or index >= len(s.tasks):
            return None
        t = s.tasks[index]
        is_held = t.state is TaskState.RUNNING and t.worker_id == worker_id and t.attempt == attempt
        return t if is_held else None

    def _oldest_claimable(self, s: _Session, n: int, now: float) -> list[_Task]:
        """Pop up to ``n`` pending tasks due by ``now``, lowest index first."""
        taken: list[_Task] = []
        not_due: list[int] = []
        while s.pending and len(taken) < n:
            t = s.tasks[heapq.heappop(s.pending)]
            if t.state is not TaskState.PENDING:
                continue  # stale entry: claimed or cancelled since it was pushed
            if t.not_before <= now:
                taken.append(t)
            else:
                not_due.append(t.index)
        for index in not_due:
            heapq.heappush(s.pending, index)
        return taken

    def _move(self, s: _Session, t: _Task, dst: TaskState) -> None:
        check_transition(t.state, dst)
        s.counts[t.state] -= 1
        s.counts[dst] += 1
        if dst is TaskState.PENDING:
            heapq.heappush(s.pending, t.index)
        t.state = dst

    def _start(self, s: _Session, t: _Task, worker_id: str, lease_expiry: float) -> Claim:
        self._move(s, t, TaskState.RUNNING)
        t.attempt += 1
        t.worker_id = worker_id
        t.lease_expiry = lease_expiry
        spec = s.spec
        return Claim(
            lease=self._lease(s, t),
            session_id=s.session_id,
            handler=t.task.handler,
            codec=t.task.codec,
            payload=t.task.payload,
            payload_ref=t.task.payload_ref,
            timeout_s=t.task.timeout_s if t.task.timeout_s is not None else spec.timeout_s,
        )

    def _finish(
        self, s: _Session, t: _Task, dst: TaskState, done: Completion | None, now: float
    ) -> None:
        self._move(s, t, dst)
        t.worker_id = ""
        t.done = done
        t.finished_at = now
        s.finished.append(t.index)
        t.done_seq = len(s.finished)

    def _apply(
        self, completions: Sequence[Completion], now: float, require_expired: bool
    ) -> list[bool]:
        for c in completions:  # refuse a forbidden outcome before applying any of the batch
            check_transition(TaskState.RUNNING, c.state)
        with self._changed:
            accepted: list[bool] = []
            for c in completions:
                t = self._held(c.task_id, c.worker_id, c.attempt)
                if t is None or (require_expired and t.lease_expiry > now):
                    accepted.append(False)
                    continue
                s = self._sessions[split_task_id(c.task_id)[0]]
                if c.failure is not None:
                    counter = _COUNTER_OF[c.failure]
                    setattr(t, counter, getattr(t, counter) + 1)
                if c.state is TaskState.PENDING:
                    self._move(s, t, TaskState.PENDING)
                    t.worker_id = ""
                    t.not_before = c.not_before
                    t.done = c  # the last error stays visible while the task waits to retry
                else:
                    self._finish(s, t, c.state, c, now)
                accepted.append(True)
            self._changed.notify_all()
            return accepted

    def _lease(self, s: _Session, t: _Task) -> Lease:
        return Lease(
            task_id=task_id(s.session_id, t.index),
            worker_id=t.worker_id,
            attempt=t.attempt,
            lease_expiry=t.lease_expiry,
            max_attempts=s.spec.max_attempts,
            retry_backoff_s=s.spec.retry_backoff_s,
            n_errors=t.n_errors,
            n_timeouts=t.n_timeouts,
            n_lost=t.n_lost,
        )

    def _counts(self, s: _Session) -> Counts:
        return Counts(**{state.label: n for state, n in s.counts.items()})

    def _info(self, s: _Session) -> SessionInfo:
        return SessionInfo(
            session_id=s.session_id,
            spec=s.spec,
            created_at=s.created_at,
            is_cancelled=s.is_cancelled,
            counts=self._counts(s),
        )

    def _record(self, s: _Session, t: _Task) -> TaskRecord:
        done = t.done
        return TaskRecord(
            task_id=task_id(s.session_id, t.index),
            session_id=s.session_id,
            state=t.state,
            codec=t.task.codec,
            attempt=t.attempt,
            n_errors=t.n_errors,
            n_timeouts=t.n_timeouts,
            n_lost=t.n_lost,
            submitted_at=t.submitted_at,
            finished_at=t.finished_at,
            result=done.result if done and t.state is TaskState.SUCCEEDED else None,
            result_ref=done.result_ref if done and t.state is TaskState.SUCCEEDED else None,
            error=done.error if done else None,
            done_seq=t.done_seq,
        )
