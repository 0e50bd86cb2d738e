"""Running a worker as a process: drain on the first SIGTERM or SIGINT, abort on the second.

``htcgrid worker`` (and ``python -m htcgrid.worker``, the same command) calls :func:`run_worker`.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from htcgrid.worker.agent import Worker
from htcgrid.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings) -> int:
    """Serve until SIGTERM or SIGINT (drain), or a second one (abort). Return an exit code:
    0 when every held attempt was finished and completed, 1 when some were abandoned."""
    worker = Worker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info(
            "worker %s: %s received, draining (send it again to abort)",
            worker.worker_id,
            signal.Signals(signum).name,
        )
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if worker.is_drained else 1
