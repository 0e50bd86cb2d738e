"""One exception root for the grid, with families callers catch on either side of the wire."""

from __future__ import annotations


class GridError(Exception):
    """Root of every error the grid raises on purpose."""


class InvalidInput(GridError, ValueError):
    """The caller gave something the grid cannot accept; nothing was changed."""


class NotFound(GridError, KeyError):
    """A session or task id that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


class PayloadTooLarge(InvalidInput):
    """A request, batch or payload is over a configured size limit; nothing was changed."""


class Unauthorized(GridError):
    """The caller gave no credentials, or credentials the grid does not accept."""


class InvalidTransition(GridError):
    """A state change the transition table forbids (a bug in the caller, never user input)."""


class LeaseLost(GridError):
    """A completion or renewal came from an attempt that no longer holds the task."""


class BackendUnavailable(GridError):
    """The state store cannot be reached or refused the operation."""


class Refused(GridError):
    """A worker refuses a task by policy (for example a pickled handler on a no-pickle worker)."""


class TaskError(GridError):
    """A task failed; carries the remote error type, message and traceback."""

    def __init__(self, task_id: str, error_type: str, message: str, traceback: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {message}")
        self.task_id = task_id
        self.error_type = error_type
        self.message = message
        self.remote_traceback = traceback


class TaskCancelled(GridError):
    """The task was cancelled before it produced a result."""
