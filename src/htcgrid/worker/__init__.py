"""The worker: an agent process that claims attempts and runs them in executor processes."""

from htcgrid.worker.agent import Worker
from htcgrid.worker.main import run_worker
from htcgrid.worker.pool import WorkerStats
from htcgrid.worker.settings import WorkerSettings

__all__ = ["Worker", "WorkerSettings", "WorkerStats", "run_worker"]
