"""Task keys: ``(sid << 32) | index``, so a session's tasks are one key range in submission
order and a batch of them is found with ``key = ANY(array)`` on the primary key."""

from __future__ import annotations

from htcgrid.core.ids import split_task_id

from .queries import INDEX_MASK

INDEX_BITS = 32
MAX_INDEX = INDEX_MASK  # the last index a session can hold

TaskKey = tuple[str, int]  # (session id, index): a task id, parsed


def parse_task_id(tid: str) -> TaskKey | None:
    """(session id, index) of a task id, None if the index is too large for any task."""
    session_id, index = split_task_id(tid)
    return None if index > MAX_INDEX else (session_id, index)


def task_key(sid: int, index: int) -> int:
    """The primary key of the ``index``-th task of session ``sid``."""
    return (sid << INDEX_BITS) | index


def index_of(task_key: int) -> int:
    """The index in its session of the task with primary key ``task_key``."""
    return task_key & MAX_INDEX


def key_range(sid: int) -> tuple[int, int]:
    """The first and last key a task of session ``sid`` can have."""
    return task_key(sid, 0), task_key(sid, MAX_INDEX)


def fresh_window(
    sid: int, n: int, fresh_from: int, fresh_holes: int, next_index: int
) -> tuple[int, int]:
    """The keys where a claim of ``n`` finds the ``n`` oldest never-attempted tasks of a
    session (as many as it has): from ``fresh_from`` on, every key is such a task or one of
    the ``fresh_holes`` cancelled before they ran. Empty (first > last) when there are none."""
    last = min(fresh_from + n + fresh_holes, next_index) - 1
    return task_key(sid, fresh_from), task_key(sid, 0) + last
