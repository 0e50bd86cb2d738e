"""Task states and the one transition table every backend applies.

Backends never decide a transition: they apply one that :func:`check_transition` allows,
conditionally on the task still being where the caller saw it.
"""

from __future__ import annotations

from enum import IntEnum

from htcgrid.core.errors import InvalidInput, InvalidTransition


class TaskState(IntEnum):
    """Lifecycle of a task. Integers so stores can index them compactly."""

    PENDING = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def label(self) -> str:
        return self.name.lower()


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

#: Every allowed (from, to) pair, with what causes it. Terminal states have no way out.
TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (TaskState.PENDING, TaskState.RUNNING): "claimed by a worker",
    (TaskState.PENDING, TaskState.CANCELLED): "cancelled before it ran",
    (TaskState.RUNNING, TaskState.SUCCEEDED): "handler returned",
    (TaskState.RUNNING, TaskState.PENDING): "attempt failed, retry left",
    (TaskState.RUNNING, TaskState.FAILED): "attempt failed, no retry left",
    (TaskState.RUNNING, TaskState.CANCELLED): "cancelled while running",
}


def is_allowed(src: TaskState, dst: TaskState) -> bool:
    """True when the table allows moving a task from ``src`` to ``dst``."""
    return (src, dst) in TRANSITIONS


def check_transition(src: TaskState, dst: TaskState) -> None:
    """Raise :class:`InvalidTransition` unless the table allows ``src -> dst``."""
    if not is_allowed(src, dst):
        raise InvalidTransition(f"a task cannot go from {src.label} to {dst.label}")


def parse_state(text: str) -> TaskState:
    """Parse a state name as users type it (``"pending"``, ``"FAILED"``)."""
    try:
        return TaskState[text.strip().upper()]
    except KeyError:
        names = ", ".join(s.label for s in TaskState)
        raise InvalidInput(f"unknown task state {text!r}; expected one of {names}") from None
