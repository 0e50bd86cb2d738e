"""Wake up when another process commits to a SQLite file, instead of polling for it.

SQLite has no cross-process notification. In WAL mode every commit writes to ``<db>-wal``,
so on Linux an inotify watch on the database's directory sees each commit as it lands: a
waiting client or worker wakes within microseconds, and an idle one costs nothing. Where
inotify is missing (other systems, some network filesystems) :func:`open_watch` returns
None and the caller polls. Events are only hints: the caller re-checks
``PRAGMA data_version`` after every wake-up, and wakes at least every ``SAFETY_S`` anyway.
Setting ``HTCGRID_NO_INOTIFY=1`` turns the watch off (to compare, or to rule it out).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import sys
import weakref
from pathlib import Path

#: Longest sleep without re-checking, in case a filesystem drops or never sends events.
SAFETY_S = 0.05

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = None if os.environ.get("HTCGRID_NO_INOTIFY") else _libc()


class CommitWatch:
    """An inotify watch on the directory of one database file. One per waiting thread:
    threads sharing a watch would consume each other's events."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._finalizer = weakref.finalize(self, os.close, fd)

    def drain(self) -> None:
        """Forget the events seen so far: the caller is about to look at the file itself."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 65536):
                pass

    def wait(self, timeout_s: float) -> bool:
        """Block until something in the directory changed or ``timeout_s`` passed (at most
        SAFETY_S); True if there was a change."""
        timeout_ms = max(0, round(min(timeout_s, SAFETY_S) * 1000))
        return bool(self._poller.poll(timeout_ms))

    def close(self) -> None:
        self._finalizer()


def open_watch(db_path: Path) -> CommitWatch | None:
    """A watch on changes next to ``db_path`` (its WAL file), or None where unsupported."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    directory = os.fsencode(db_path.parent)
    if _LIBC.inotify_add_watch(fd, directory, _IN_MODIFY | _IN_CREATE) < 0:
        os.close(fd)
        return None
    return CommitWatch(fd)
