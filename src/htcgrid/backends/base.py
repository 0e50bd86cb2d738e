"""The backend port: the small, batched set of operations the grid needs from a state store.

Every backend (memory, sqlite, and later redis, postgres) implements this protocol and passes
the one conformance suite in ``tests/contract``. Backends apply transitions atomically and
conditionally; they never decide policy (retry, fair share, states) -- ``htcgrid.core`` does.

Times are passed in as ``now`` (seconds since the epoch) so tests can drive a fake clock and
every process of a grid compares leases on the same scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from htcgrid.backends.blobs import BlobStore, GridBlobStore
from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import (
    Claim,
    Completion,
    Counts,
    Lease,
    NewTask,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so callers choose instead of catching NotImplementedError."""

    is_durable: bool  # a restart of any grid process loses nothing accepted
    is_shared: bool  # several processes (workers, clients) may open the same store at once
    #: wait_for_work looks for claimable work before it blocks (and returns at once if there
    #: is): a worker whose last claim emptied the store may then wait before its next claim
    #: instead of making it first, which would find nothing after a lone task (W2)
    wait_sees_work: bool = False


@dataclass(frozen=True, slots=True)
class LeaseKey:
    """Identifies one attempt for renewal: the task and the attempt number holding it."""

    task_id: str
    attempt: int


#: How long an operation may take before :func:`drifting` moves its clock on.
DRIFT_AFTER_S = 0.1


def drifting(now: float) -> Callable[[], float]:
    """A clock for one operation that a backend may retry after reconnecting: the caller's
    ``now`` while the operation is young, then ``now`` plus the time gone since it began
    (the clock was made), so a lease granted on a late try, or after a read that waited out
    a broken link, is measured from when it is granted (not born expired). Within the first
    DRIFT_AFTER_S the caller's ``now`` is kept exactly, as it would be without a retry."""
    began = time.monotonic()

    def clock() -> float:
        gone = time.monotonic() - began
        return now if gone < DRIFT_AFTER_S else now + gone

    return clock


def check_batch_size(batch_key: str, accepted: int, offered: int) -> None:
    """A retried batch must be the batch first accepted under its key: at least its size."""
    if accepted != offered:
        raise InvalidInput(
            f"batch key {batch_key!r} was used for a batch of {accepted} task(s), "
            f"not {offered}: use a new key for a new batch"
        )


@runtime_checkable
class ClientStore(Protocol):
    """What a client needs of a store: sessions, submit, results, cancel. The direct mode's
    backends and the HTTP API's remote store both provide it. Methods are batched."""

    @property
    def url(self) -> str:
        """The URL the backend was opened with."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def blobs(self) -> BlobStore:
        """Where payloads and results above the inline limit are kept."""
        ...

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        """Create a session; InvalidInput if the id is taken."""
        ...

    def get_session(self, session_id: str) -> SessionInfo:
        """The session with its counts; NotFound if absent."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, oldest first."""
        ...

    def delete_session(self, session_id: str) -> None:
        """Remove a session, its tasks and its blobs; NotFound if absent."""
        ...

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        """Add pending tasks, all or none; return their ids in order.

        With a ``batch_key``, a batch already accepted under that key in this session is not
        added again: the ids of the first acceptance are returned, so a client may retry a
        submit whose answer it lost without duplicating tasks. NotFound if the session is
        absent, InvalidInput if it is cancelled or the key was used for a batch of another size.
        """
        ...

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        """Cancel pending and running tasks (all of the session's when ``task_ids`` is None,
        which also closes the session to new tasks). Finished tasks are untouched.
        Return how many tasks were cancelled; NotFound if the session is absent."""
        ...

    def counts(self, session_id: str) -> Counts:
        """Tasks of a session per state; NotFound if absent."""
        ...

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """Records of the given tasks, in the given order; NotFound if any is absent."""
        ...

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        """Finished tasks of a session in the order they finished, from position ``after``
        (exclusive; start at 0), at most ``limit``. Use the last ``done_seq`` as the next
        ``after`` to stream results without holding them all."""
        ...

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        """Block until the session may have a task finished past ``after``, or timeout.
        Never raises for an unreachable store: it returns at the timeout and the caller's
        next real call reports the outage."""
        ...

    def close(self) -> None:
        """Release connections; the backend must not be used afterwards."""
        ...


@runtime_checkable
class Backend(ClientStore, Protocol):
    """A grid's state store: the client's operations plus those of workers and reapers."""

    @property
    def blobs(self) -> GridBlobStore:
        """Where payloads and results above the inline limit are kept."""
        ...

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        """Move up to ``max_tasks`` claimable tasks to running under fresh leases.

        Claimable: pending with ``not_before <= now``. Split between sessions by
        :func:`htcgrid.core.fairshare.plan_claim`; within a session, lowest submission index
        first (a retry keeps its place ahead of tasks submitted after it). Each claim
        increments the attempt number. No task is ever handed to two claims at once.
        """
        ...

    def renew(
        self, worker_id: str, leases: Sequence[LeaseKey], lease_ttl_s: float, now: float
    ) -> list[bool]:
        """Extend leases still held by ``worker_id``; False where the attempt lost the task
        (cancelled, expired and reaped, or finished) so the worker can stop it."""
        ...

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        """Apply attempt outcomes, each only if that (worker, attempt) still holds the task
        running. False marks a rejected late completion, which changes nothing. A failure adds
        one to its kind's counter (REFUSED counts as an error). An outcome the transition
        table forbids raises InvalidTransition before anything of the batch is applied."""
        ...

    def expired(self, now: float, limit: int) -> list[Lease]:
        """Running attempts whose lease expired before ``now``, oldest expiry first."""
        ...

    def expire(self, completions: Sequence[Completion], now: float) -> list[bool]:
        """Like :meth:`complete`, but each applies only if its lease is still expired at ``now``
        (a renewal that raced the reaper wins)."""
        ...

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until work may be claimable or ``timeout_s`` passed (may return early; at
        once if work is claimable when ``capabilities.wait_sees_work``). Never raises for an
        unreachable store (see :meth:`wait_for_finished`)."""
        ...
