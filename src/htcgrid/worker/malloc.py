"""Let the grid's own processes reuse the memory they free, instead of faulting it in anew.

Payloads of a megabyte or so are allocated and freed for every task: received, decoded,
encoded, sent. glibc's malloc serves such blocks with fresh ``mmap`` pages, or trims them
from the heap as soon as 2 MB lie free, so every buffer costs a page fault per 4 KiB --
more than the copy itself, and far more in a virtual machine. Raising both thresholds keeps
freed blocks in the heap for the next task. Only worker agents and executors do this (not
a client's process, which belongs to its user); elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MB = 1024 * 1024
#: Blocks above this are still mapped and unmapped on their own (huge results).
MMAP_THRESHOLD_MB = 32
#: Free memory kept at the top of the heap before it is returned to the system.
TRIM_THRESHOLD_MB = 128


def keep_freed_memory(limit_mb: int | None = None) -> bool:
    """Raise malloc's thresholds in this process; with an address-space limit of
    ``limit_mb``, keep at most a quarter of it. True if glibc took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    trim_mb = TRIM_THRESHOLD_MB if limit_mb is None else min(TRIM_THRESHOLD_MB, limit_mb // 4)
    mmap_mb = min(MMAP_THRESHOLD_MB, trim_mb)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb * _MB)
            and libc.mallopt(_M_TRIM_THRESHOLD, trim_mb * _MB)
        )
    return False
