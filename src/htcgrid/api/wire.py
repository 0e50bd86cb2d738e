"""Wire schemas of the HTTP API, shared by the server and the remote client.

One definition in msgspec serves everything: the server decodes request bodies with it (JSON
or msgpack, unknown fields refused), the remote client decodes responses with it, and the
OpenAPI document is generated from it, so the three cannot drift apart. Bytes travel base64
in JSON and raw in msgpack. Nothing here imports a web framework: the client needs only this.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta

from htcgrid.core.model import (
    Codec,
    Counts,
    ErrorInfo,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState

#: Longest duration (timeouts, backoffs) a request may ask for: 30 days.
MAX_SECONDS = 30 * 24 * 3600.0
#: The media types the API reads and writes.
JSON = "application/json"
MSGPACK = "application/msgpack"

SessionId = Annotated[
    str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$", description="1-64 of [A-Za-z0-9_-]")
]
Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
TaskIds = Annotated[list[Annotated[str, Meta(max_length=100)]], Meta(max_length=100_000)]


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one API process accepts; clients size their requests by it (``GET /v1/info``)."""

    max_body_bytes: int = 64 * 1024 * 1024  # any request body, JSON, msgpack or a blob
    max_batch_tasks: int = 10_000  # tasks in one submit
    max_payload_bytes: int = 1024 * 1024  # one task's inline payload; larger ones go to blobs
    max_page: int = 10_000  # finished tasks in one page
    max_wait_s: float = 30.0  # longest long-poll, below common proxy read timeouts
    max_waiters: int = 256  # long-polls blocked in the store at once, per API process


class SessionIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions``: a new session's options, defaults for all its tasks."""

    session_id: SessionId | None = None  # chosen by the client (stable ids), else generated
    priority: Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)] = 0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 3
    timeout_s: Seconds | None = None
    retry_backoff_s: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = 0.0
    name: Annotated[str, Meta(max_length=256)] = ""
    tenant: Annotated[str, Meta(max_length=256)] = ""  # ignored: the owner is the caller's

    def spec(self, tenant: str) -> SessionSpec:
        """The stored spec, owned by ``tenant`` whatever the body said."""
        return SessionSpec(
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            retry_backoff_s=self.retry_backoff_s,
            name=self.name,
            tenant=tenant,
        )


class SessionList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sessions``: the caller's sessions (an admin's: all), oldest first."""

    sessions: list[SessionInfo]


class TaskIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One task to submit: exactly one of ``payload`` (inline) or ``payload_ref`` (a blob of
    the same session, uploaded first) is set."""

    handler: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=8192,
            pattern="^(import|pickle|command):.",
            description="import:pkg.module:function, pickle:<blob key>, command:<JSON argv>",
        ),
    ]
    codec: Codec = Codec.PICKLE
    payload: bytes | None = b""
    payload_ref: Annotated[str, Meta(max_length=200)] | None = None
    timeout_s: Seconds | None = None


class SubmitIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/tasks``: a batch, added all or none."""

    tasks: list[TaskIn]


class SubmitOut(msgspec.Struct, frozen=True, kw_only=True):
    task_ids: list[str]  # in submission order


class CancelIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/cancel``: these tasks, or (null) the whole session."""

    task_ids: TaskIds | None = None


class CancelOut(msgspec.Struct, frozen=True, kw_only=True):
    cancelled: int


class LookupIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/tasks/lookup``: records of these tasks of the session."""

    task_ids: TaskIds


class StateName(StrEnum):
    """Task states by name on the wire (the store's integers are an internal detail)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TO_NAME = {s: StateName(s.label) for s in TaskState}
_TO_STATE = {n: TaskState[n.name] for n in StateName}


class TaskOut(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the store holds it, with its outcome once finished."""

    task_id: str
    session_id: str
    state: StateName
    codec: Codec
    attempt: int
    n_errors: int
    n_timeouts: int
    n_lost: int
    submitted_at: float
    finished_at: float | None = None
    result: bytes | None = None
    result_ref: str | None = None  # download with GET /v1/sessions/{id}/blobs/{name}
    error: ErrorInfo | None = None
    done_seq: int | None = None  # position in the session's stream of finished tasks

    @classmethod
    def of(cls, r: TaskRecord) -> TaskOut:
        return cls(
            task_id=r.task_id,
            session_id=r.session_id,
            state=_TO_NAME[r.state],
            codec=r.codec,
            attempt=r.attempt,
            n_errors=r.n_errors,
            n_timeouts=r.n_timeouts,
            n_lost=r.n_lost,
            submitted_at=r.submitted_at,
            finished_at=r.finished_at,
            result=r.result,
            result_ref=r.result_ref,
            error=r.error,
            done_seq=r.done_seq,
        )

    def record(self) -> TaskRecord:
        return TaskRecord(
            task_id=self.task_id,
            session_id=self.session_id,
            state=_TO_STATE[self.state],
            codec=self.codec,
            attempt=self.attempt,
            n_errors=self.n_errors,
            n_timeouts=self.n_timeouts,
            n_lost=self.n_lost,
            submitted_at=self.submitted_at,
            finished_at=self.finished_at,
            result=self.result,
            result_ref=self.result_ref,
            error=self.error,
            done_seq=self.done_seq,
        )


class TaskList(msgspec.Struct, frozen=True, kw_only=True):
    tasks: list[TaskOut]


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    """Finished tasks in the order they finished; pass ``next_after`` as the next ``after``."""

    tasks: list[TaskOut]
    next_after: int


class Info(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/info``: who the caller is and what this API accepts."""

    version: str
    tenant: str
    role: str
    is_durable: bool  # the store loses nothing accepted when a grid process restarts
    limits: Limits


class ErrorOut(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx and 5xx body: the grid's error class name and what to fix."""

    error: str
    message: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


#: Every type the OpenAPI document names, so its components are generated in one pass.
SCHEMA_TYPES: tuple[type, ...] = (
    SessionIn,
    SessionInfo,
    SessionList,
    SubmitIn,
    SubmitOut,
    CancelIn,
    CancelOut,
    LookupIn,
    TaskList,
    TaskPage,
    Counts,
    Info,
    ErrorOut,
    Health,
)
