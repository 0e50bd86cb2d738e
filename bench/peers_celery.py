"""The Celery app that ``bench/peers.py --peer celery`` runs its workloads on: the same
functions as the grid's (``htcgrid.workloads``), one task each, pickled (W1 and W4 carry
bytes, which Celery's default JSON cannot), with Redis as both broker and result store.

The broker's URL comes from ``HTCGRID_PEERS_CELERY``, set by ``bench/peers.py`` for the
worker it starts and for itself.
"""

from __future__ import annotations

import os

from celery import Celery

from htcgrid.workloads import burn_cpu_ms, echo_bytes, noop

URL = os.environ.get("HTCGRID_PEERS_CELERY", "redis://127.0.0.1:6379/13")

app = Celery("peers", broker=URL, backend=URL)
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    broker_connection_retry_on_startup=True,
)


def worker_pid(_: object) -> int:
    """Warm-up task: which worker process ran it."""
    return os.getpid()


for fn in (noop, burn_cpu_ms, echo_bytes, worker_pid):
    app.task(name=fn.__name__)(fn)
