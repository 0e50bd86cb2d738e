"""Messages between the agent and its executor processes, msgpack-encoded over a pipe.

An executor first sends an empty message once it has started up. The agent sends whole
batches (one message for many tasks) and skips; an executor answers every task it was sent
with exactly one :class:`Outcome`, in the order it was sent, so the agent always knows which
task an executor is running -- give or take the outcomes it holds back (see
:func:`htcgrid.worker.executor.may_hold`), which are only those of attempts without a
timeout.
"""

from __future__ import annotations

import msgspec

from htcgrid.core.model import ErrorInfo

AttemptKey = tuple[str, int]  # (task id, attempt): one attempt, on both sides of the pipe


class Work(msgspec.Struct, frozen=True, array_like=True):
    """One attempt to run: everything an executor needs, payload already fetched -- or,
    when the blob store is files the executor can read, named by ``payload_ref``."""

    task_id: str
    attempt: int
    handler: str
    codec: str
    payload: bytes
    has_timeout: bool = False  # the agent stops it after a deadline counted from its start
    payload_ref: str | None = None  # read it from the grid's blob store (payload is empty)


class Batch(msgspec.Struct, frozen=True, array_like=True, tag="b"):
    """Tasks to append to an executor's queue, with the pickled handlers it has not seen."""

    works: list[Work]
    handler_blobs: dict[str, bytes] = {}


class Skip(msgspec.Struct, frozen=True, array_like=True, tag="s"):
    """Do not run this queued attempt (its lease was lost); answer it as skipped."""

    task_id: str
    attempt: int


class Outcome(msgspec.Struct, frozen=True, array_like=True):
    """The end of one task on an executor: a result, an error, or a skip."""

    task_id: str
    attempt: int
    result: bytes | None = None
    error: ErrorInfo | None = None
    duration_s: float = 0.0
    is_skipped: bool = False
    is_exiting: bool = False  # the executor exits after this (its state is unsafe to reuse)
    result_ref: str | None = None  # the result, too large to inline, written as a blob file


ToExecutor = Batch | Skip

encoder = msgspec.msgpack.Encoder()
to_executor_decoder = msgspec.msgpack.Decoder(ToExecutor)
outcome_decoder = msgspec.msgpack.Decoder(Outcome)
