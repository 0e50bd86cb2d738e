"""Handlers the drills run on real workers, imported as ``tests.drills.handlers``.

Each attempt appends ``start``/``end`` lines to the file named by ``$HTCGRID_DRILL_RECORD``
(one file per worker process, so writers never interleave) and returns where it ran, so a
drill can tell which attempts ran twice and whose result the store accepted.
"""

from __future__ import annotations

import os
import time


def _record(event: str, key: str) -> None:
    path = os.environ.get("HTCGRID_DRILL_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {key} {time.time():.3f}\n")


def nap(arg: tuple[str, float]) -> tuple[str, str]:
    """Sleep ``arg[1]`` seconds; return ``(key, host)``, the host from $HTCGRID_DRILL_HOST."""
    key, seconds = arg
    _record("start", key)
    time.sleep(seconds)
    _record("end", key)
    return key, os.environ.get("HTCGRID_DRILL_HOST", "?")


def tick(x: int) -> int:
    """Record a run of task ``x``, sleep 5 ms, return ``2 * x``."""
    _record("run", str(x))
    time.sleep(0.005)
    return 2 * x
