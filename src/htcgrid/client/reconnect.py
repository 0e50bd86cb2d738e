"""Riding out a store restart: retry calls that are safe to repeat, with capped backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from htcgrid.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a client keeps retrying a call before it gives up and raises.
DEFAULT_PATIENCE_S = 60.0


def retrying(call: Callable[[], T], what: str, patience_s: float = DEFAULT_PATIENCE_S) -> T:
    """Run ``call``, retrying on :class:`BackendUnavailable` for up to ``patience_s``.

    Only for calls that are safe to repeat: reads, and writes made idempotent (a submit with
    a batch key, a fenced completion, a cancel).
    """
    deadline = time.monotonic() + patience_s
    delay = 0.05
    while True:
        try:
            return call()
        except BackendUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: store unavailable (%s); retrying in %.2f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
