"""What one batch changes, gathered in Python and then written with one statement: each
session's counter deltas and done sequence, and the columns of the accepted outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from htcgrid.core.model import Completion, FailureKind
from htcgrid.core.states import TaskState

_RUNNING = int(TaskState.RUNNING)
_FAILURE_COLUMN = {  # which of n_errors, n_timeouts, n_lost a failure adds one to
    FailureKind.ERROR: 0,
    FailureKind.REFUSED: 0,
    FailureKind.TIMEOUT: 1,
    FailureKind.LOST: 2,
}
_OUTCOME_COLUMNS = (
    *("keys", "states", "not_before", "finished_at", "done_seqs"),
    *("results", "result_refs", "errors", "n_errors", "n_timeouts", "n_lost"),
)


class Tally:
    """Per-session effects of one batch: state count deltas and the done sequence so far."""

    __slots__ = ("deltas", "fresh_holes", "last_done_seq", "sid")

    def __init__(self, sid: int, last_done_seq: int) -> None:
        self.sid = sid
        self.last_done_seq = last_done_seq
        self.deltas = [0] * len(TaskState)
        self.fresh_holes = 0  # never-attempted tasks cancelled

    def next_done_seq(self) -> int:
        self.last_done_seq += 1
        return self.last_done_seq

    def move(self, src: int, dst: int) -> None:
        self.deltas[src] -= 1
        self.deltas[dst] += 1

    @property
    def is_changed(self) -> bool:
        return any(self.deltas)


def counter_params(tallies: Sequence[Tally]) -> dict[str, list[int]]:
    """Parameters of the counters update that complete, expire and cancel share."""
    return {
        "d_sids": [t.sid for t in tallies],
        **{f"d_{state.label}": [t.deltas[state] for t in tallies] for state in TaskState},
        "d_last_done_seq": [t.last_done_seq for t in tallies],
        "d_fresh_holes": [t.fresh_holes for t in tallies],
    }


class Outcomes:
    """The accepted completions of one batch, as the array parameters of ``Sql.end_apply``."""

    def __init__(self, encoder: msgspec.msgpack.Encoder) -> None:
        self._encoder = encoder
        self.columns: dict[str, list[Any]] = {name: [] for name in _OUTCOME_COLUMNS}
        self.finished: set[str] = set()  # sessions with newly finished tasks
        self.has_retry = False

    def __len__(self) -> int:
        return len(self.columns["keys"])

    def add(self, session_id: str, tally: Tally, task_key: int, c: Completion, now: float) -> None:
        """Record that ``c`` ends the attempt running task ``task_key`` of ``session_id``."""
        is_done = c.state is not TaskState.PENDING
        is_success = c.state is TaskState.SUCCEEDED
        failures = [0, 0, 0]
        if c.failure is not None:
            failures[_FAILURE_COLUMN[c.failure]] = 1
        tally.move(_RUNNING, c.state)
        values = (
            task_key,
            int(c.state),
            float(c.not_before),  # binary arrays cannot mix ints and floats
            float(now) if is_done else None,
            tally.next_done_seq() if is_done else None,
            c.result if is_success else None,
            c.result_ref if is_success else None,
            None if c.error is None else self._encoder.encode(c.error),
            *failures,
        )
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)
        if is_done:
            self.finished.add(session_id)
        else:
            self.has_retry = True
