"""htcgrid: a high-throughput compute grid. Sessions of short tasks, run exactly once.

The public API::

    import htcgrid
    with htcgrid.connect() as grid, grid.session() as session:
        print(list(session.map(abs, [-1, -2, -3])))

``htcgrid.connect("https://grid.example:8765", token=...)`` gives the same API through the
grid's HTTP control plane.
"""

from htcgrid.client import (
    Command,
    Grid,
    GridExecutor,
    RemoteTraceback,
    Session,
    TaskFuture,
    TaskResult,
    WaitResult,
    connect,
)
from htcgrid.core.errors import (
    BackendUnavailable,
    GridError,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    Refused,
    TaskCancelled,
    TaskError,
    Unauthorized,
)
from htcgrid.core.model import Counts, SessionInfo, SessionSpec
from htcgrid.core.states import TaskState
from htcgrid.embedded import EmbeddedGrid

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Command",
    "Counts",
    "EmbeddedGrid",
    "Grid",
    "GridError",
    "GridExecutor",
    "InvalidInput",
    "InvalidTransition",
    "LeaseLost",
    "NotFound",
    "PayloadTooLarge",
    "Refused",
    "RemoteTraceback",
    "Session",
    "SessionInfo",
    "SessionSpec",
    "TaskCancelled",
    "TaskError",
    "TaskFuture",
    "TaskResult",
    "TaskState",
    "Unauthorized",
    "WaitResult",
    "connect",
]
