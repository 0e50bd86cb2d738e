"""Turn expired leases into retries or failures.

A worker that dies, hangs or loses the store stops renewing its leases; the reaper finds
those attempts and ends them through the retry policy. It is idempotent (each transition is
conditional on the lease still being expired and unchanged) and batched, so several reapers
may run against one store at once.
"""

from __future__ import annotations

import logging
import threading
import time

from htcgrid.backends.base import Backend
from htcgrid.backends.blobs import output_blob_key
from htcgrid.core.errors import BackendUnavailable, GridError
from htcgrid.core.model import Lease
from htcgrid.core.retry import decide_failure, lost_error

log = logging.getLogger(__name__)


def reap_once(backend: Backend, now: float, limit: int = 1000) -> int:
    """End up to ``limit`` expired attempts; return how many transitions the store accepted."""
    leases = backend.expired(now, limit)
    if not leases:
        return 0
    decisions = [decide_failure(lease, lost_error(lease), now) for lease in leases]
    accepted = backend.expire(decisions, now)
    ended = [lease for lease, ok in zip(leases, accepted, strict=True) if ok]
    for lease in ended:
        log.warning(
            "lease expired: task %s attempt %d of worker %s",
            lease.task_id,
            lease.attempt,
            lease.worker_id,
        )
    if ended:
        _discard_results(backend, ended)
    return len(ended)


def _discard_results(backend: Backend, ended: list[Lease]) -> None:
    """Delete what the expired attempts may have written as their results before their
    worker died: their completions can no longer be accepted, so no task will name them."""
    try:
        backend.blobs.discard([output_blob_key(x.task_id, x.attempt) for x in ended])
    except (GridError, OSError) as exc:  # they stay until their session is deleted
        log.warning("cannot delete the result blobs of %d expired attempt(s): %s", len(ended), exc)


class Reaper:
    """Runs :func:`reap_once` every ``period_s`` on a daemon thread until stopped."""

    def __init__(self, backend: Backend, period_s: float = 1.0, limit: int = 1000) -> None:
        self.backend = backend
        self.period_s = period_s
        self.limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="htcgrid-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def run(self) -> None:
        """Reap until :meth:`stop`; a full batch is followed at once by another."""
        while not self._stop.is_set():
            try:
                n = reap_once(self.backend, time.time(), self.limit)
            except BackendUnavailable as exc:
                log.warning("reaper: %s; retrying in %.1f s", exc, self.period_s)
                n = 0
            except Exception:
                log.exception("reaper pass failed; retrying in %.1f s", self.period_s)
                n = 0
            if n < self.limit:
                self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
