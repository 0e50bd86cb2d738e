"""Heartbeats: a thread that renews every lease the worker holds, whatever the loop is doing.

It keeps its own view of the attempts in flight (lock-protected), renews them in one batched
call every ``lease_ttl_s / 3``, and reports the ones the store says are lost (cancelled,
reaped) so the agent stops them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.core.errors import BackendUnavailable
from htcgrid.worker.protocol import AttemptKey

log = logging.getLogger(__name__)


class InFlight:
    """The attempts this worker holds, shared by the agent's loop and the heartbeat."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[AttemptKey, None] = {}
        self._lost: list[AttemptKey] = []

    def __len__(self) -> int:
        return len(self._held)

    def add(self, keys: Iterable[AttemptKey]) -> None:
        with self._lock:
            self._held.update(dict.fromkeys(keys))

    def discard(self, keys: Iterable[AttemptKey]) -> None:
        with self._lock:
            for key in keys:
                self._held.pop(key, None)

    def snapshot(self) -> list[AttemptKey]:
        with self._lock:
            return list(self._held)

    def mark_lost(self, keys: Iterable[AttemptKey]) -> int:
        """Move still-held ``keys`` to the lost list; return how many moved.

        A key the agent already finished is ignored: its renewal failed because the store
        accepted the completion, not because the attempt was taken away.
        """
        n = 0
        with self._lock:
            for key in keys:
                if key in self._held:
                    del self._held[key]
                    self._lost.append(key)
                    n += 1
        return n

    def take_lost(self) -> list[AttemptKey]:
        with self._lock:
            lost, self._lost = self._lost, []
            return lost


class Heartbeat:
    """Renews the leases of :class:`InFlight` every ``lease_ttl_s / 3`` on a daemon thread."""

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        in_flight: InFlight,
        lease_ttl_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.in_flight = in_flight
        self.lease_ttl_s = lease_ttl_s
        self.period_s = lease_ttl_s / 3
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcgrid-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def beat(self) -> int:
        """Renew every lease held now; return how many turned out lost."""
        keys = self.in_flight.snapshot()
        if not keys:
            return 0
        leases = [LeaseKey(task_id, attempt) for task_id, attempt in keys]
        held = self.backend.renew(self.worker_id, leases, self.lease_ttl_s, time.time())
        lost = [key for key, ok in zip(keys, held, strict=True) if not ok]
        n = self.in_flight.mark_lost(lost) if lost else 0
        if n:
            log.info(
                "worker %s lost %d lease(s) (cancelled or reaped)",
                self.worker_id,
                n,
                extra={"worker_id": self.worker_id},
            )
            self._on_lost()
        return n

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.beat()
            except BackendUnavailable as exc:
                log.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)
            except Exception:  # the heartbeat loop must outlive a store hiccup
                log.exception(
                    "worker %s: heartbeat failed; retrying in %.1f s",
                    self.worker_id,
                    self.period_s,
                    extra={"worker_id": self.worker_id},
                )
