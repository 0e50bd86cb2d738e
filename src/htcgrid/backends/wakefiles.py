"""Wake-up files beside a SQLite database: waiting processes wake for the commits they need.

SQLite has no cross-process notification. Two files beside the database stand in for one:

- ``<db>-work``, a FIFO of wake-up tokens for idle workers. A writer whose commit made tasks
  claimable writes one byte per task, each ``write`` a separate call, until the FIFO holds
  ``WORK_TOKENS``. Every idle worker polls the FIFO through an epoll set of its own,
  registered ``EPOLLEXCLUSIVE``: the kernel then wakes one idle worker per byte written, not
  all of them, so a lone task does not send every idle worker racing for it on a 2-core
  machine (the losers' claims take CPU from the winner). Registration order decides which
  one, so the same worker takes one lone task after another while the others sleep. A
  woken worker takes one byte, never more: the poll of a worker woken by the next byte
  finds the FIFO readable only while that byte is still there, and would otherwise go back
  to sleep.
- ``<db>-done``, a plain file a writer whose commit finished tasks writes a byte to; waiting
  clients hold an inotify watch on it.

So each waiter wakes within microseconds of the commit it waits for -- and not for the
claims, heartbeats and other commits in between, which would each take CPU from the
executors. Where inotify, epoll or FIFOs are missing (other systems, some network
filesystems) :func:`open_watch` returns None and the caller polls. Wake-ups are only hints:
the caller re-checks the database after every one, and at least every ``SAFETY_S`` anyway,
so a writer that rings nothing (an older htcgrid, a hand-run ``sqlite3``) delays a waiter by
at most that. ``HTCGRID_NO_INOTIFY=1`` turns the watches off (to compare, or to rule them
out).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import select
import stat
import struct
import sys
import termios
import weakref
from enum import Enum
from pathlib import Path

#: Longest sleep without re-checking, in case a filesystem drops or never sends events.
SAFETY_S = 0.25
#: Most wake-up tokens the FIFO holds: a large submit wakes this many idle workers at once,
#: and the others find the work at their next safety re-check or wake-up. Tokens left when
#: nobody waits cost a later waiter a look at the database each.
WORK_TOKENS = 8

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
    """The writer's side: the two wake-up files, rung after a commit."""

    def __init__(self, db_path: Path) -> None:
        done = os.open(Wake.DONE.path(db_path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._done = done
        self._work = _open_fifo(Wake.WORK.path(db_path))  # None: FIFOs unsupported here
        fds = [done] if self._work is None else [done, self._work]
        self._finalizer = weakref.finalize(self, _close_all, fds)

    def ring(self, wakes: set[Wake], n_tasks: int = 1) -> None:
        """Wake whoever waits for these: up to ``n_tasks`` idle workers for WORK (while the
        FIFO holds fewer than WORK_TOKENS), every waiting client for DONE (the bytes mean
        nothing)."""
        if Wake.DONE in wakes:
            with contextlib.suppress(OSError):  # a hint: the waiter's safety re-check covers it
                os.pwrite(self._done, b"\0", 0)
        if Wake.WORK in wakes and self._work is not None:
            try:
                unread = _unread(self._work)
            except OSError:
                unread = 0
            for _ in range(min(max(1, n_tasks), WORK_TOKENS - unread)):
                try:
                    os.write(self._work, b"\0")  # one write, one worker woken
                except OSError:  # cannot take more (EAGAIN): waiters will wake anyway
                    break

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


class TokenWatch:
    """An idle worker's end of the ``<db>-work`` FIFO, in an epoll set of its own registered
    ``EPOLLEXCLUSIVE``: a token written wakes one such watch, not all. One per waiting
    thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self._finalizer = weakref.finalize(self, _close_all, [fd, self._epoll.fileno()])

    def drain(self) -> None:
        """Nothing: tokens are taken one per wake-up (:meth:`wait`). Taking all of them
        before looking at the database would take those of the other workers the same
        commit woke: their polls would find the FIFO empty, and they would sleep on."""

    def wait(self, timeout_s: float) -> bool:
        """Block until a token is there or ``timeout_s`` passed (at most SAFETY_S); True if
        one was, taking it (or finding that another waiter took it first)."""
        timeout = max(0.0, min(timeout_s, SAFETY_S))
        if not self._epoll.poll(timeout, 1):
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._fd, 1)
        return True

    def close(self) -> None:
        self._finalizer()


def _unread(fd: int) -> int:
    """Bytes written to the FIFO ``fd`` and not read yet."""
    count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return count


def _open_fifo(path: Path) -> int | None:
    """``path`` as a FIFO, opened for reading and writing without blocking (so it never reads
    as closed, whoever else has it open); made if missing, and in place of the plain file an
    older htcgrid rang. None where FIFOs or epoll are unsupported, or watches are off."""
    if _LIBC is None or not hasattr(select, "EPOLLEXCLUSIVE"):
        return None
    try:
        for _ in range(2):
            try:
                os.mkfifo(path, 0o644)
            except FileExistsError:
                if not stat.S_ISFIFO(os.stat(path).st_mode):
                    os.unlink(path)
                    continue
            break
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # made plain again meanwhile by an older one
        os.close(fd)
        return None
    return fd


#: What a waiting thread holds: a token watch for WORK, an inotify watch for DONE.
AnyWatch = Watch | TokenWatch


def open_watch(db_path: Path, wake: Wake) -> AnyWatch | None:
    """A watch on the ``wake`` file of ``db_path``, or None where unsupported."""
    if _LIBC is None:
        return None
    if wake is Wake.WORK:
        fd = _open_fifo(wake.path(db_path))
        return None if fd is None else TokenWatch(fd)
    fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    if _LIBC.inotify_add_watch(fd, os.fsencode(wake.path(db_path)), _IN_MODIFY) < 0:
        os.close(fd)
        return None
    return Watch(fd)
