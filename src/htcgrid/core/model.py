"""Values that cross the backend port: sessions, new tasks, claims, completions, records.

They are msgspec Structs so every backend and transport can encode them compactly without a
schema of its own. They hold no behaviour beyond small derived properties.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from htcgrid.core.states import TaskState


class FailureKind(StrEnum):
    """Why an attempt ended without a result; each kind is counted on the task."""

    ERROR = "error"  # the handler raised, or its executor crashed
    TIMEOUT = "timeout"  # the attempt ran past the task's timeout and was killed
    LOST = "lost"  # the worker stopped renewing its lease (dead, cut off, frozen)
    REFUSED = "refused"  # the worker will not run it (policy); never retried


class Codec(StrEnum):
    """How a task's payload and result bytes are encoded."""

    PICKLE = "pickle"  # any Python value; needs a worker that accepts pickles
    MSGPACK = "msgpack"  # language-neutral values: None, bool, int, float, str, bytes, list, dict
    RAW = "raw"  # bytes as they are (command handlers read stdin, write stdout)


class SessionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a client asks for when it opens a session; defaults for all its tasks."""

    priority: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    retry_backoff_s: float = 0.0
    name: str = ""
    tenant: str = ""  # the owner, set by the HTTP API from the caller's token; "" when direct


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks of a session per state."""

    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.succeeded + self.failed + self.cancelled

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def as_dict(self) -> dict[str, int]:
        return {s.label: self.of(s) for s in TaskState}

    def of(self, state: TaskState) -> int:
        value: int = getattr(self, state.label)
        return value


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A session as the store holds it."""

    session_id: str
    spec: SessionSpec
    created_at: float
    is_cancelled: bool
    counts: Counts


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
    """One task to submit. Exactly one of ``payload`` (inline) or ``payload_ref`` (blob) is set."""

    handler: str
    codec: Codec = Codec.PICKLE
    payload: bytes | None = b""
    payload_ref: str | None = None
    timeout_s: float | None = None


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong in an attempt, as the client will see it."""

    kind: FailureKind
    type: str
    message: str
    traceback: str = ""
    exception: bytes | None = None  # the pickled exception, when it could be pickled


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A running attempt: who holds it, until when, and what retry policy applies to it."""

    task_id: str
    worker_id: str
    attempt: int
    lease_expiry: float
    max_attempts: int
    retry_backoff_s: float
    n_errors: int = 0
    n_timeouts: int = 0
    n_lost: int = 0


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A task handed to a worker: its lease and everything needed to run it."""

    lease: Lease
    session_id: str
    handler: str
    codec: Codec
    payload: bytes | None
    payload_ref: str | None
    timeout_s: float | None

    @property
    def task_id(self) -> str:
        return self.lease.task_id

    @property
    def attempt(self) -> int:
        return self.lease.attempt


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """The end of one attempt, fenced by (worker_id, attempt).

    ``state`` is SUCCEEDED, FAILED, or PENDING for a retry at ``not_before``. ``failure``
    names which counter the attempt adds to when it did not succeed.
    """

    task_id: str
    worker_id: str
    attempt: int
    state: TaskState
    result: bytes | None = None
    result_ref: str | None = None
    error: ErrorInfo | None = None
    failure: FailureKind | None = None
    not_before: float = 0.0


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the store holds it, with its outcome once finished."""

    task_id: str
    session_id: str
    state: TaskState
    codec: Codec
    attempt: int
    n_errors: int
    n_timeouts: int
    n_lost: int
    submitted_at: float
    finished_at: float | None = None
    result: bytes | None = None
    result_ref: str | None = None
    error: ErrorInfo | None = None
    done_seq: int | None = None  # position in the session's stream of finished tasks
