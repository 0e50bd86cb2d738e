"""Batches laid out as the array parameters of one statement: the completions of a complete
or expire, and what a cancel with task ids changes (each session's counter deltas and done
sequence)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from htcgrid.core.model import Completion, FailureKind
from htcgrid.core.states import TaskState

_FAILURE_COLUMN = {  # which of n_errors, n_timeouts, n_lost a failure adds one to
    FailureKind.ERROR: 0,
    FailureKind.REFUSED: 0,
    FailureKind.TIMEOUT: 1,
    FailureKind.LOST: 2,
}
_ATTEMPT_COLUMNS = (
    *("session_ids", "idxs", "worker_ids", "attempts", "states", "not_before"),
    *("results", "result_refs", "errors", "failures"),
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


class Attempts:
    """The completions of one batch, as the array parameters of ``Sql.end_attempts``.

    The server checks the fences, keeps the first valid completion per task and numbers the
    finished ones; Python only lays the batch out in columns. ``positions`` maps each row
    sent back to its place in the batch (ids that can name no task are never sent).
    """

    def __init__(self, encoder: msgspec.msgpack.Encoder) -> None:
        self._encoder = encoder
        self.columns: dict[str, list[Any]] = {name: [] for name in _ATTEMPT_COLUMNS}
        self.positions: list[int] = []

    def add(self, position: int, session_id: str, index: int, c: Completion) -> None:
        """Send ``c``, the ``position``-th completion of the batch, for task ``index`` of
        ``session_id``."""
        is_success = c.state is TaskState.SUCCEEDED
        values = (
            session_id,
            index,
            c.worker_id,
            c.attempt,
            int(c.state),
            float(c.not_before),  # binary arrays cannot mix ints and floats
            c.result if is_success else None,
            c.result_ref if is_success else None,
            None if c.error is None else self._encoder.encode(c.error),
            None if c.failure is None else _FAILURE_COLUMN[c.failure],
        )
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)
        self.positions.append(position)
