"""The client: sessions, batched submit, futures, streaming results, an Executor."""

from htcgrid.client.executor import GridExecutor
from htcgrid.client.futures import TaskFuture
from htcgrid.client.grid import Grid, connect
from htcgrid.client.payloads import Command, RemoteTraceback
from htcgrid.client.session import Session, TaskResult, WaitResult

__all__ = [
    "Command",
    "Grid",
    "GridExecutor",
    "RemoteTraceback",
    "Session",
    "TaskFuture",
    "TaskResult",
    "WaitResult",
    "connect",
]
