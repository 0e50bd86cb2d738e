"""Wake-up files beside a SQLite database: waiting processes wake for the commits they need.

SQLite has no cross-process notification. Two small files beside the database stand in for
one: a writer whose commit made tasks claimable writes a byte to ``<db>-work``, and one whose
commit finished tasks writes a byte to ``<db>-done``. On Linux an idle worker holds an inotify
watch on the first and a waiting client on the second, so each wakes within microseconds of
the commit it waits for -- and not for the claims, heartbeats and other commits in between,
which on a 2-core machine would each take CPU from the executors. Where inotify is missing
(other systems, some network filesystems) :func:`open_watch` returns None and the caller
polls. Events are only hints: the caller re-checks the database after every wake-up, and
at least every ``SAFETY_S`` anyway, so a writer that rings nothing (an older htcgrid, a
hand-run ``sqlite3``) delays a waiter by at most that. ``HTCGRID_NO_INOTIFY=1`` turns the
watches off (to compare, or to rule them out).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import sys
import weakref
from enum import Enum
from pathlib import Path

#: Longest sleep without re-checking, in case a filesystem drops or never sends events.
SAFETY_S = 0.25

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class Wake(Enum):
    """What a commit did that someone may be waiting for, and the file that says so."""

    WORK = "work"  # tasks became claimable: idle workers wait for this
    DONE = "done"  # tasks finished (or a session went away): clients wait for this

    def path(self, db_path: Path) -> Path:
        return db_path.with_name(f"{db_path.name}-{self.value}")


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


class Bells:
    """The writer's side: one open file per kind of wake-up, rung after a commit."""

    def __init__(self, db_path: Path) -> None:
        self._fds = {
            wake: os.open(wake.path(db_path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            for wake in Wake
        }
        self._finalizer = weakref.finalize(self, _close_all, list(self._fds.values()))

    def ring(self, wakes: set[Wake]) -> None:
        """Wake whoever watches these files (the byte itself means nothing)."""
        for wake in wakes:
            with contextlib.suppress(OSError):  # a hint: the waiter's safety re-check covers it
                os.pwrite(self._fds[wake], b"\0", 0)

    def close(self) -> None:
        self._finalizer()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Watch:
    """An inotify watch on one wake-up file. One per waiting thread and kind: threads
    sharing a watch would consume each other's events."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._finalizer = weakref.finalize(self, os.close, fd)

    def drain(self) -> None:
        """Forget the events seen so far: the caller is about to look at the database."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 65536):
                pass

    def wait(self, timeout_s: float) -> bool:
        """Block until the file was rung or ``timeout_s`` passed (at most SAFETY_S); True
        if it was rung."""
        timeout_ms = max(0, round(min(timeout_s, SAFETY_S) * 1000))
        return bool(self._poller.poll(timeout_ms))

    def close(self) -> None:
        self._finalizer()


def open_watch(db_path: Path, wake: Wake) -> Watch | None:
    """A watch on the ``wake`` file of ``db_path``, or None where unsupported."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    if _LIBC.inotify_add_watch(fd, os.fsencode(wake.path(db_path)), _IN_MODIFY) < 0:
        os.close(fd)
        return None
    return Watch(fd)
