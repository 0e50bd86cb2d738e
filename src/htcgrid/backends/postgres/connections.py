"""Connections to a PostgreSQL store: one per thread, short explicit transactions, clear errors.

Each thread gets its own connection (a worker's heartbeat thread renews leases while its
main thread claims), opened on first use and replaced on the next call after it breaks, so
callers that retry survive a server restart. A thread that waits for notifications gets a
second, dedicated connection that does nothing but LISTEN.

Connections run in autocommit mode at the protocol level and every multi-statement operation
is one explicit ``BEGIN ... COMMIT``: reads cost one round trip and no connection is ever
left idle inside a transaction.

When the server cannot be reached, an operation of which nothing can have been applied (a
read, an idempotent statement, a transaction that never sent its COMMIT, or anything whose
connection could not even be opened) is tried again on a new connection, at once and then
after growing pauses (about 3.5 s in all), so a server restart is ridden out; anything else,
and an outage that lasts longer, raises :class:`BackendUnavailable`. Waits never raise for an
unreachable server: they keep trying until their timeout and return.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from htcgrid.backends.postgres.address import Address
from htcgrid.core.errors import BackendUnavailable, InvalidInput

Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")

_BEGIN = b"BEGIN"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"
_CONFLICT_RETRIES = 8  # deadlocks are rare (lock order is fixed) but not impossible
#: Pauses before each new try of an operation that lost the server, while the tries have
#: lasted less than _RECONNECT_BUDGET_S in all (a try may itself wait connect_timeout).
_RECONNECT_PAUSES_S = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
_RECONNECT_BUDGET_S = 3.5
_TIMELY_BUDGET_S = 0.25  # a claim replayed later would hand out leases already running out
_WAIT_PAUSE_S = 0.5  # the longest a wait sleeps between tries while the server is away
#: libpq options the URL may override. A dead link (a host cut off the network) must fail a
#: call within seconds, not block until TCP gives up (about 15 minutes on Linux): keepalive
#: probes after 5 s of silence notice a peer gone while we wait for a reply (in about 20 s),
#: and unacknowledged data fails the connection after 20 s.
_CONNECT_DEFAULTS = {
    "application_name": "htcgrid",
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
    # a client cut off inside a transaction must not hold its row locks (a session's, which
    # every claim needs) until the server's keepalive gives up, hours later
    "options": "-c idle_in_transaction_session_timeout=10s",
}


class _Pauses:
    """The pauses between tries of one operation that lost the server, within the budget."""

    __slots__ = ("_budget_s", "_left", "_start")

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._start = time.monotonic()
        self._left = iter(_RECONNECT_PAUSES_S)

    def next(self) -> float | None:
        """The pause before the next try, or None when there is no time for one."""
        pause = next(self._left, None)
        if pause is None or time.monotonic() - self._start + pause > self._budget_s:
            return None
        return pause


class _Unreachable(BackendUnavailable):
    """No connection to the server could be opened: nothing of the operation was sent."""


class _Handle:
    """A thread's connection. The thread-local slot holds the only strong reference, so it is
    released with its thread; the pool tracks handles weakly to close the rest at close()."""

    __slots__ = ("__weakref__", "channels", "conn", "pid")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.channels: set[str] = set()  # LISTENed on this connection

    def __del__(self) -> None:  # its thread ended: close it (a forked child's copy stays open)
        if self.pid == os.getpid() and not self.conn.closed:
            self.conn.close()


class Connections:
    """Per-thread connections to one store, and the transactions run on them."""

    def __init__(self, address: Address) -> None:
        self._address = address
        self._shown = _redacted(address.url)
        given = conninfo_to_dict(address.conninfo)
        defaults = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
        self._conninfo = make_conninfo(address.conninfo, **defaults)
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._inherited: list[_Handle] = []  # a forked child's copies of its parent's
        self._is_closed = False

    # -- running statements ---------------------------------------------------------------
    def transaction(self, body: Callable[[Conn], T], *, is_timely: bool = False) -> T:
        """Run ``body`` in one transaction. Replayed when PostgreSQL rolled it back (deadlock)
        and, on a new connection, when the connection broke before COMMIT was sent: in both
        cases nothing of it was applied. ``is_timely`` bodies (leases computed from the
        caller's ``now``) are replayed after a break only at once, never seconds later."""
        return self._run(body, in_transaction=True, is_idempotent=False, is_timely=is_timely)

    def read(self, body: Callable[[Conn], T]) -> T:
        """Run read-only statements (each sees its own snapshot); retried like transactions."""
        return self._run(body, in_transaction=False, is_idempotent=True, is_timely=False)

    def statement(
        self, body: Callable[[Conn], T], *, is_idempotent: bool, is_timely: bool = False
    ) -> T:
        """Run one writing statement, atomic on its own. After a broken connection it is
        retried only if ``is_idempotent``: it may have been applied before the break."""
        return self._run(
            body, in_transaction=False, is_idempotent=is_idempotent, is_timely=is_timely
        )

    def _run(
        self,
        body: Callable[[Conn], T],
        *,
        in_transaction: bool,
        is_idempotent: bool,
        is_timely: bool,
    ) -> T:
        conflicts = 0
        pauses = _Pauses(_TIMELY_BUDGET_S if is_timely else _RECONNECT_BUDGET_S)
        while True:
            try:
                handle = self._handle("main")
            except _Unreachable as exc:  # nothing was sent: try again while the pauses last
                self._pause_or_raise(pauses, exc)
                continue
            conn = handle.conn
            is_committing = False
            try:
                if not in_transaction:
                    return body(conn)
                conn.execute(_BEGIN, prepare=False)
                result = body(conn)
                is_committing = True
                conn.execute(_COMMIT, prepare=False)
                return result
            except errors.TransactionRollback as exc:  # deadlock: rolled back, so replay it
                self._abort(handle)
                conflicts += 1
                if conflicts > _CONFLICT_RETRIES:
                    raise BackendUnavailable(
                        f"the store {self._shown} kept aborting the operation: {exc}"
                    ) from exc
                time.sleep(random.uniform(0.0, 0.002 * conflicts))
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                is_broken = self._abort(handle)
                is_unapplied = is_idempotent or (in_transaction and not is_committing)
                if not (is_broken and is_unapplied):
                    # a lone statement commits as it runs: a break leaves it as unknown as a
                    # break during COMMIT
                    is_unknown = is_committing or (is_broken and not in_transaction)
                    raise BackendUnavailable(self._explain(exc, is_unknown)) from exc
                self._pause_or_raise(pauses, BackendUnavailable(self._explain(exc, False)))
            except psycopg.DataError as exc:
                self._abort(handle)
                raise InvalidInput(f"the store cannot hold a value it was given: {exc}") from exc
            except psycopg.Error as exc:
                self._abort(handle)
                raise BackendUnavailable(
                    f"the store {self._shown} refused the operation: {exc}"
                ) from exc
            except BaseException:
                self._abort(handle)
                raise

    def _pause_or_raise(self, pauses: _Pauses, exc: BackendUnavailable) -> None:
        """Sleep before the next try of an operation that lost the server, or raise ``exc``
        when the tries are used up (or the store was closed meanwhile)."""
        pause = pauses.next()
        if pause is None or self._is_closed:
            raise exc
        time.sleep(pause)

    def _explain(self, exc: Exception, is_unknown: bool) -> str:
        if is_unknown:
            return (
                f"lost the store {self._shown} before it confirmed the change; it may or may "
                f"not have been applied: {exc}"
            )
        return f"cannot use the store {self._shown}: {exc}"

    # -- waiting for notifications --------------------------------------------------------
    def wait(
        self,
        channel: str,
        seconds_to_ready: Callable[[Conn], float],
        timeout_s: float,
        payload: str | None = None,
    ) -> None:
        """Block until ``seconds_to_ready`` says 0, a notification on ``channel`` (with
        ``payload``, if given) arrives, or ``timeout_s`` passed.

        The condition is checked after LISTEN and after dropping older notifications, so a
        change committed at any moment either shows in the check or wakes the wait: a lost
        notification can cost at most the timeout, never a wrong answer. While the server
        cannot be reached the wait keeps trying until its timeout, then returns: the
        caller's next operation reports the outage.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                self._wait_once(channel, seconds_to_ready, deadline, payload)
                return
            except (psycopg.Error, _Unreachable):
                if self._is_closed:
                    raise BackendUnavailable(f"the store {self._shown} was closed") from None
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(left, _WAIT_PAUSE_S))

    def _wait_once(
        self,
        channel: str,
        seconds_to_ready: Callable[[Conn], float],
        deadline: float,
        payload: str | None,
    ) -> None:
        handle = self._handle("listen")
        conn = handle.conn
        try:
            if channel not in handle.channels:
                conn.execute(f'LISTEN "{channel}"'.encode(), prepare=False)
                handle.channels.add(channel)
            with _notifications(conn, 0.0) as stale:
                for _ in stale:
                    pass
            while True:
                wait_s = min(seconds_to_ready(conn), deadline - time.monotonic())
                if wait_s <= 0:
                    return
                with _notifications(conn, wait_s) as notes:
                    for note in notes:
                        if note.channel == channel and payload in (None, note.payload):
                            return
                if time.monotonic() >= deadline:
                    return
        except psycopg.Error:
            self._abort(handle)
            raise

    # -- connections ----------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection this process opened; later calls raise BackendUnavailable."""
        with self._lock:
            self._is_closed = True
            handles = [h for h in self._handles if h.pid == os.getpid()]
            self._handles.clear()
        for handle in handles:  # a forked child leaves its parent's connections alone
            handle.conn.close()

    def _handle(self, slot: str) -> _Handle:
        """This thread's connection for ``slot``, opened on first use, after a break, and in
        a forked child (a connection must never be used from two processes)."""
        if self._is_closed:
            raise BackendUnavailable(f"the store {self._shown} was closed")
        handle: _Handle | None = getattr(self._local, slot, None)
        if handle is not None and handle.pid == os.getpid() and not handle.conn.closed:
            if slot == "listen" or not _spoke_unasked(handle.conn):
                return handle
            self._drop(handle)  # the server went away (a restart): nothing was sent on it
        if handle is not None and handle.pid != os.getpid():
            self._inherited.append(handle)  # never close it here: that would end the parent's
        handle = self._connect()
        setattr(self._local, slot, handle)
        return handle

    def _connect(self) -> _Handle:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise _Unreachable(f"cannot connect to the store {self._shown}: {exc}") from exc
        handle = _Handle(conn)
        with self._lock:
            if not self._is_closed:
                self._handles.add(handle)
                return handle
        conn.close()
        raise BackendUnavailable(f"the store {self._shown} was closed")

    def _drop(self, handle: _Handle) -> None:
        handle.conn.close()
        with self._lock:
            self._handles.discard(handle)

    def _abort(self, handle: _Handle) -> bool:
        """Roll back whatever the failed operation left open; drop the connection if it is
        broken, so the next call opens a new one. True if it was dropped."""
        conn = handle.conn
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute(_ROLLBACK, prepare=False)
            except psycopg.Error:
                conn.close()
        if conn.closed:
            with self._lock:
                self._handles.discard(handle)
            return True
        return False


def _spoke_unasked(conn: Conn) -> bool:
    """True if the server sent something on this idle connection, which asked for nothing and
    listens to no channel: in practice the notice of a server shutting down, or the end of
    the stream. Checked before each operation (one poll, no round trip), it lets a connection
    the server closed while idle be replaced before a statement is sent on it, so a
    one-statement write whose connection broke can only have broken while it ran."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


@contextmanager
def _notifications(conn: Conn, timeout_s: float) -> Iterator[Iterator[psycopg.Notify]]:
    """Notifications received within ``timeout_s``; the generator is closed on exit so the
    connection's lock is released however the loop ends."""
    notes = conn.notifies(timeout=timeout_s)
    try:
        yield notes
    finally:
        notes.close()


def _redacted(url: str) -> str:
    """``url`` with any password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
