"""Running a worker as a process: drain on the first SIGTERM or SIGINT, abort on the second.

``htcgrid worker`` (and ``python -m htcgrid.worker``, the same command) calls :func:`run_worker`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from types import FrameType

from htcgrid.worker.agent import Worker
from htcgrid.worker.malloc import keep_freed_memory
from htcgrid.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, *, parent_pid: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT (drain), or a second one (abort). Return an exit code:
    0 when every held attempt was finished and completed, 1 when some were abandoned.

    ``parent_pid``: the process that started this one. The kernel sends SIGTERM when it
    dies, so the workers of a grid that was killed (``htcgrid up``, an embedded grid) drain
    instead of serving on as orphans; if it died while this one was starting, drain at once.
    """
    keep_freed_memory()
    worker = Worker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info(
            "worker %s: %s received, draining (send it again to abort)",
            worker.worker_id,
            signal.Signals(signum).name,
        )
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if parent_pid is not None:
        _follow_parent(parent_pid)
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if worker.is_drained else 1


_PR_SET_PDEATHSIG = 1


def _follow_parent(parent: int) -> None:
    """Ask for SIGTERM when the parent dies; if it already has, drain at once."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
