"""Small builders and checks shared by the contract tests; they use only the backend port."""

from __future__ import annotations

import multiprocessing.queues
import multiprocessing.synchronize
import time
from collections import Counter
from collections.abc import Sequence

from htcgrid.backends.base import Backend
from htcgrid.backends.registry import open_backend
from htcgrid.core.model import (
    Claim,
    Codec,
    Completion,
    Counts,
    ErrorInfo,
    FailureKind,
    NewTask,
    SessionSpec,
)
from htcgrid.core.retry import decide_failure, decide_success
from htcgrid.core.states import TaskState

#: A fake clock: tests pass explicit times, so leases and retries are deterministic.
T0 = 1_000_000.0
TTL = 30.0
HANDLER = "import:tests.contract.helpers:echo"


def echo(value: object) -> object:
    """A handler for the tasks the tests submit (never run: the tests play the worker)."""
    return value


def new_tasks(n: int, *, prefix: bytes = b"p", codec: Codec = Codec.RAW) -> list[NewTask]:
    return [NewTask(handler=HANDLER, codec=codec, payload=prefix + b"%d" % i) for i in range(n)]


def open_session(
    backend: Backend, session_id: str = "s", *, n: int = 0, now: float = T0, **spec: object
) -> list[str]:
    """Create a session and submit ``n`` tasks to it; return their ids."""
    backend.create_session(session_id, SessionSpec(**spec), now)  # type: ignore[arg-type]
    return backend.submit(session_id, new_tasks(n), now) if n else []


def error(kind: FailureKind = FailureKind.ERROR, message: str = "boom") -> ErrorInfo:
    return ErrorInfo(kind=kind, type="ValueError", message=message, traceback="Traceback ...")


def succeed(
    claim: Claim, result: bytes | None = b"ok", result_ref: str | None = None
) -> Completion:
    return decide_success(claim.lease, result, result_ref)


def fail(claim: Claim, kind: FailureKind = FailureKind.ERROR, now: float = T0) -> Completion:
    """What a worker reports for a failed attempt: a retry while attempts remain, else failed."""
    return decide_failure(claim.lease, error(kind), now)


def claim_all(backend: Backend, worker_id: str = "w", now: float = T0) -> list[Claim]:
    """Claim until nothing is claimable at ``now``."""
    claims: list[Claim] = []
    while batch := backend.claim(worker_id, 1000, TTL, now):
        claims.extend(batch)
    return claims


def states(backend: Backend, task_ids: Sequence[str]) -> list[TaskState]:
    return [r.state for r in backend.tasks(task_ids)]


def assert_counts_exact(backend: Backend, session_id: str, task_ids: Sequence[str]) -> None:
    """The session's counters agree with its task records (``task_ids`` are all its tasks)."""
    tally = Counter(states(backend, task_ids))
    expected = Counts(**{s.label: tally[s] for s in TaskState})
    assert backend.counts(session_id) == expected
    assert backend.get_session(session_id).counts == expected


def drain(backend: Backend, worker_id: str, batch: int, now: float) -> list[str]:
    """Play a worker: claim and complete until nothing is left; return the ids it claimed."""
    claimed: list[str] = []
    while claims := backend.claim(worker_id, batch, TTL, now):
        claimed.extend(c.task_id for c in claims)
        accepted = backend.complete([succeed(c, c.task_id.encode()) for c in claims], now)
        assert all(accepted)
        time.sleep(0)  # let other claimers in between batches (threads share one GIL)
    return claimed


def drain_in_process(
    url: str,
    worker_id: str,
    batch: int,
    now: float,
    start: multiprocessing.synchronize.Barrier,
    out: multiprocessing.queues.Queue[list[str]],
) -> None:
    """:func:`drain` in a child process with its own handle on the store at ``url``."""
    backend = open_backend(url)
    try:
        start.wait()
        out.put(drain(backend, worker_id, batch, now))
    finally:
        backend.close()
