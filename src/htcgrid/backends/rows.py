"""Rows of the SQL backends (SQLite, PostgreSQL) made into port values, in one place.

Both keep a task under the key ``(sid << 32) | index`` and select tasks and sessions with the
same column order, so one set of converters serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from htcgrid.core.ids import task_id
from htcgrid.core.model import (
    Claim,
    Codec,
    Counts,
    ErrorInfo,
    Lease,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState

CODECS = {c.value: c for c in Codec}
_MAX_INDEX = (1 << 32) - 1

spec_decoder = msgspec.msgpack.Decoder(SessionSpec)
error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


def counts(row: Sequence[int]) -> Counts:
    """Counts from (pending, running, succeeded, failed, cancelled)."""
    pending, running, succeeded, failed, cancelled = row
    return Counts(
        pending=pending, running=running, succeeded=succeeded, failed=failed, cancelled=cancelled
    )


def session_info(row: Sequence[Any]) -> SessionInfo:
    """From (session_id, spec, created_at, is_cancelled, n_pending .. n_cancelled)."""
    session_id, spec, created_at, is_cancelled, *n = row
    return SessionInfo(
        session_id=session_id,
        spec=spec_decoder.decode(spec),
        created_at=created_at,
        is_cancelled=bool(is_cancelled),
        counts=counts(n),
    )


def task_record(session_id: str, row: Sequence[Any]) -> TaskRecord:
    """From (key, state, codec, attempt, n_errors, n_timeouts, n_lost, submitted_at,
    finished_at, result, result_ref, error, done_seq)."""
    key, state, codec, attempt, n_err, n_to, n_lost, submitted, finished, *rest = row
    result, result_ref, error, done_seq = rest
    return TaskRecord(
        task_id=task_id(session_id, key & _MAX_INDEX),
        session_id=session_id,
        state=TaskState(state),
        codec=CODECS[codec],
        attempt=attempt,
        n_errors=n_err,
        n_timeouts=n_to,
        n_lost=n_lost,
        submitted_at=submitted,
        finished_at=finished,
        result=result,
        result_ref=result_ref,
        error=None if error is None else error_decoder.decode(error),
        done_seq=done_seq,
    )


def claim(
    session_id: str,
    spec: SessionSpec,
    row: Sequence[Any],
    worker_id: str,
    expiry: float,
) -> Claim:
    """From (key, attempt, n_errors, n_timeouts, n_lost, handler, codec, payload,
    payload_ref, timeout_s) of a task just started under ``worker_id``'s lease."""
    key, attempt, n_errors, n_timeouts, n_lost, handler, codec, payload, ref, timeout_s = row
    counters = (n_errors, n_timeouts, n_lost)
    return Claim(
        lease=lease(session_id, key & _MAX_INDEX, spec, worker_id, attempt, expiry, counters),
        session_id=session_id,
        handler=handler,
        codec=CODECS[codec],
        payload=payload,
        payload_ref=ref,
        timeout_s=timeout_s,
    )


def lease(
    session_id: str,
    index: int,
    spec: SessionSpec,
    worker_id: str,
    attempt: int,
    expiry: float,
    counters: tuple[int, int, int],
) -> Lease:
    """The lease of a running attempt; ``counters`` are (n_errors, n_timeouts, n_lost)."""
    n_errors, n_timeouts, n_lost = counters
    return Lease(
        task_id=task_id(session_id, index),
        worker_id=worker_id,
        attempt=attempt,
        lease_expiry=expiry,
        max_attempts=spec.max_attempts,
        retry_backoff_s=spec.retry_backoff_s,
        n_errors=n_errors,
        n_timeouts=n_timeouts,
        n_lost=n_lost,
    )
