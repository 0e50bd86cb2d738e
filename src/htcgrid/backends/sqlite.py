"""The embedded default backend: the whole grid state in one SQLite file.

Several processes (client, workers, reaper) open the same file at once, so the file runs in
WAL mode (readers never block the one writer), every write is a ``BEGIN IMMEDIATE``
transaction (it takes the write lock up front instead of failing to upgrade half way), and
each thread gets its own connection. Every port call is one transaction however many tasks
it touches, and per-session state counters live in the sessions table, updated in the same
transactions, so counts and fair-share planning never scan tasks.

A task's primary key is ``(sid << 32) | index``: a session's tasks are one contiguous key
range in submission order, which makes "oldest first" an index walk and deleting a session a
range delete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from htcgrid.backends import rows as convert
from htcgrid.backends.base import Capabilities, LeaseKey, check_batch_size
from htcgrid.backends.blobs import FileBlobStore, GridBlobStore
from htcgrid.backends.wakefiles import AnyWatch, Bells, Wake, open_watch
from htcgrid.core.errors import BackendUnavailable, InvalidInput, NotFound
from htcgrid.core.fairshare import Candidate, plan_claim
from htcgrid.core.ids import check_session_id, split_task_id, task_id
from htcgrid.core.model import (
    Claim,
    Completion,
    Counts,
    ErrorInfo,
    FailureKind,
    Lease,
    NewTask,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState, check_transition

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_INDEX_BITS = 32  # a task key is (sid << 32) | index
_MAX_INDEX = (1 << _INDEX_BITS) - 1
_PENDING, _RUNNING = int(TaskState.PENDING), int(TaskState.RUNNING)
_CANCELLED = int(TaskState.CANCELLED)
_FAILURE_COLUMN = {
    FailureKind.ERROR: 0,
    FailureKind.REFUSED: 0,
    FailureKind.TIMEOUT: 1,
    FailureKind.LOST: 2,
}

# Big values go last in the row: columns after an overflowing blob cost extra page reads.
_SCHEMA = (
    """CREATE TABLE sessions (
        sid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so task keys never collide
        session_id TEXT NOT NULL UNIQUE,
        priority INTEGER NOT NULL,
        created_at REAL NOT NULL,
        is_cancelled INTEGER NOT NULL DEFAULT 0,
        last_served REAL NOT NULL DEFAULT 0,
        next_index INTEGER NOT NULL DEFAULT 0,
        last_done_seq INTEGER NOT NULL DEFAULT 0,
        n_pending INTEGER NOT NULL DEFAULT 0,
        n_running INTEGER NOT NULL DEFAULT 0,
        n_succeeded INTEGER NOT NULL DEFAULT 0,
        n_failed INTEGER NOT NULL DEFAULT 0,
        n_cancelled INTEGER NOT NULL DEFAULT 0,
        spec BLOB NOT NULL
    )""",
    "CREATE INDEX sessions_pending ON sessions(sid) WHERE n_pending > 0",
    """CREATE TABLE tasks (
        key INTEGER PRIMARY KEY,
        sid INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT,
        lease_expiry REAL,
        not_before REAL NOT NULL DEFAULT 0,
        n_errors INTEGER NOT NULL DEFAULT 0,
        n_timeouts INTEGER NOT NULL DEFAULT 0,
        n_lost INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL NOT NULL,
        finished_at REAL,
        done_seq INTEGER,
        timeout_s REAL,
        codec TEXT NOT NULL,
        handler TEXT NOT NULL,
        payload_ref TEXT,
        result_ref TEXT,
        error BLOB,
        result BLOB,
        payload BLOB
    )""",
    # every index ends with the rowid, so this one is (sid, key): oldest pending first
    f"CREATE INDEX tasks_pending ON tasks(sid) WHERE state = {_PENDING}",
    f"CREATE INDEX tasks_running ON tasks(lease_expiry) WHERE state = {_RUNNING}",
    "CREATE INDEX tasks_finished ON tasks(sid, done_seq) WHERE done_seq IS NOT NULL",
    """CREATE TABLE batches (
        sid INTEGER NOT NULL,
        batch_key TEXT NOT NULL,
        first_index INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (sid, batch_key)
    ) WITHOUT ROWID""",
)

_SESSION_COLUMNS = (
    "session_id, spec, created_at, is_cancelled, "
    "n_pending, n_running, n_succeeded, n_failed, n_cancelled"
)
_RECORD_COLUMNS = (
    "key, state, codec, attempt, n_errors, n_timeouts, n_lost, submitted_at, finished_at, "
    "result, result_ref, error, done_seq"
)
_INSERT_TASK = (
    "INSERT INTO tasks (key, sid, handler, codec, payload, payload_ref, timeout_s, submitted_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_CLAIM_TASKS = f"""
    UPDATE tasks SET state = {_RUNNING}, attempt = attempt + 1, worker_id = ?, lease_expiry = ?
    WHERE key IN (
        SELECT key FROM tasks INDEXED BY tasks_pending
        WHERE sid = ? AND state = {_PENDING} AND not_before <= ? ORDER BY key LIMIT ?)
    RETURNING key, attempt, n_errors, n_timeouts, n_lost, handler, codec, payload, payload_ref,
        timeout_s"""
_FENCE = f"key = ? AND state = {_RUNNING} AND worker_id = ? AND attempt = ?"
_END_ATTEMPT = f"""
    UPDATE tasks SET state = ?, worker_id = NULL, not_before = ?, finished_at = ?, done_seq = ?,
        result = ?, result_ref = ?, error = ?,
        n_errors = n_errors + ?, n_timeouts = n_timeouts + ?, n_lost = n_lost + ?
    WHERE {_FENCE} AND lease_expiry <= ?"""
_RENEW = f"UPDATE tasks SET lease_expiry = ? WHERE {_FENCE}"
_CANCEL_ALL_FROM = """
    UPDATE tasks SET state = {cancelled}, worker_id = NULL, finished_at = ?1, error = NULL,
        done_seq = ?2 + c.rn
    FROM (SELECT key AS k, row_number() OVER (ORDER BY key) AS rn
          FROM tasks INDEXED BY {index} WHERE sid = ?3 AND state = {state}) AS c
    WHERE tasks.key = c.k"""
_CANCEL_ALL = {
    state: _CANCEL_ALL_FROM.format(cancelled=_CANCELLED, index=index, state=state)
    for state, index in ((_PENDING, "tasks_pending"), (_RUNNING, "tasks_running"))
}
_CANCEL_ONE = (
    f"UPDATE tasks SET state = {_CANCELLED}, worker_id = NULL, finished_at = ?, error = NULL, "
    "done_seq = ? WHERE key = ?"
)
_BUMP_COUNTS = """
    UPDATE sessions SET n_pending = n_pending + ?, n_running = n_running + ?,
        n_succeeded = n_succeeded + ?, n_failed = n_failed + ?, n_cancelled = n_cancelled + ?,
        last_done_seq = ? WHERE sid = ?"""


_ANY_PENDING = "SELECT 1 FROM sessions INDEXED BY sessions_pending WHERE n_pending > 0 LIMIT 1"
#: Checkpoint once the WAL holds this many pages not copied back (twice SQLite's default)...
#: A checkpoint's two fsyncs, and the writing out of the WAL's dirty pages, hold up the
#: writer that runs it and slow every other process for a few milliseconds: at SQLite's
#: 1,000 pages a lone task in seventy (W2: about 14 pages a task) took 3-7 ms instead of
#: 0.8, which is its p99; at 2,000, one in 140 takes 6-9 ms, and the p99 is 1.6-2.3 ms.
_CHECKPOINT_PAGES = 2_000
#: ...and let SQLite checkpoint inside a COMMIT only past this many, should that fail.
_BACKSTOP_CHECKPOINT_PAGES = 10_000
_WAL_FRAME = struct.Struct("=I")  # a frame number in the WAL index, native byte order
_BUSY_TIMEOUT_MS = 30_000  # many processes share the file; a writer may queue a while
_LOCK_FIRST_PAUSE_S = 0.00002  # a writer waiting for the lock tries again after this...
_LOCK_LAST_PAUSE_S = 0.001  # ...doubling up to this
_NEVER = float("inf")
_FIRST_PAUSE_S = 0.0005  # polling for other processes' commits starts fast...
_LAST_PAUSE_S = 0.005  # ...and backs off to this, which stays cheap when idle


def _key_range(sid: int) -> tuple[int, int]:
    """The first and last task key a session can hold."""
    first = sid << _INDEX_BITS
    return first, first + _MAX_INDEX


class _Keys:
    """Turns task ids into task keys inside one transaction, looking each session up once.

    Session ids map to sids per transaction only: another process may delete a session and
    create one with the same id, which gets a new sid.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._sids: dict[str, int | None] = {}

    def sid(self, session_id: str) -> int | None:
        if session_id not in self._sids:
            row = self._conn.execute(
                "SELECT sid FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            self._sids[session_id] = None if row is None else row[0]
        return self._sids[session_id]

    def of(self, tid: str) -> int | None:
        """The key of task ``tid``, or None when its session is absent or its index too big."""
        session_id, index = split_task_id(tid)
        sid = self.sid(session_id)
        if sid is None or index > _MAX_INDEX:
            return None
        return (sid << _INDEX_BITS) | index


class _Handle:
    """A thread's connection, its own descriptor of the writers' gate (a ``flock`` is held
    per open file, so threads cannot share one) and its wake-up watches. The thread-local
    slot holds the only strong reference, so all of it closes when its thread ends; the
    backend tracks handles weakly to close the rest in :meth:`SqliteBackend.close`."""

    __slots__ = ("__weakref__", "_finalizer", "conn", "gate", "pid", "watches")

    def __init__(self, conn: sqlite3.Connection, gate: int) -> None:
        self.conn = conn
        self.gate = gate
        self.pid = os.getpid()
        self.watches: dict[Wake, AnyWatch | None] = {}  # None: no watch possible here
        self._finalizer = weakref.finalize(self, os.close, gate)

    def close(self) -> None:
        self.conn.close()
        for watch in self.watches.values():
            if watch is not None:
                watch.close()
        self._finalizer()


class _Tally:
    """Per-session effects of one batch: state count deltas and the done sequence so far."""

    __slots__ = ("deltas", "last_done_seq", "sid")

    def __init__(self, sid: int, last_done_seq: int) -> None:
        self.sid = sid
        self.last_done_seq = last_done_seq
        self.deltas = [0] * len(TaskState)

    def next_done_seq(self) -> int:
        self.last_done_seq += 1
        return self.last_done_seq

    def move(self, src: int, dst: int, n: int = 1) -> None:
        self.deltas[src] -= n
        self.deltas[dst] += n

    def row(self) -> tuple[int, ...]:
        """Parameters of :data:`_BUMP_COUNTS`."""
        return (*self.deltas, self.last_done_seq, self.sid)


class SqliteBackend:
    """:class:`htcgrid.backends.base.Backend` on one SQLite file shared by local processes."""

    @staticmethod
    def open_blobs(path: Path) -> FileBlobStore:
        """The blob files of the store at ``path`` (``<file>.blobs``), without its state."""
        path = Path(path).absolute()
        return FileBlobStore(path.with_name(path.name + ".blobs"))

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._blobs = self.open_blobs(self.path)
        self._bells = Bells(self.path)
        self._shm: int | None = None  # the WAL index, read to time checkpoints
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()  # of live threads
        self._handles_lock = threading.Lock()
        self._inherited: list[_Handle] = []
        self._is_closed = False
        self._spec_decoder = msgspec.msgpack.Decoder(SessionSpec)
        self._error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
        self._encoder = msgspec.msgpack.Encoder()
        self._create_schema()

    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(is_durable=True, is_shared=True, wait_sees_work=True)

    @property
    def blobs(self) -> GridBlobStore:
        return self._blobs

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        check_session_id(session_id)
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO sessions (session_id, priority, created_at, spec)"
                    " VALUES (?, ?, ?, ?)",
                    (session_id, spec.priority, now, self._encoder.encode(spec)),
                )
            except sqlite3.IntegrityError:
                raise InvalidInput(f"session {session_id} already exists") from None
        return SessionInfo(
            session_id=session_id, spec=spec, created_at=now, is_cancelled=False, counts=Counts()
        )

    def get_session(self, session_id: str) -> SessionInfo:
        row = (
            self._conn()
            .execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no session {session_id}")
        return self._session_info(row)

    def list_sessions(self) -> list[SessionInfo]:
        rows = self._conn().execute(f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY sid")
        return [self._session_info(row) for row in rows]

    def delete_session(self, session_id: str) -> None:
        with self._write({Wake.DONE}) as conn:  # its waiters learn it is gone
            sid = self._sid(conn, session_id)
            conn.execute("DELETE FROM tasks WHERE key BETWEEN ? AND ?", _key_range(sid))
            conn.execute("DELETE FROM batches WHERE sid = ?", (sid,))
            conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
        self._blobs.delete_session(session_id)

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        with self._write({Wake.WORK}, len(tasks)) as conn:
            row = conn.execute(
                "SELECT sid, is_cancelled, next_index, spec FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id}")
            sid, is_cancelled, first, spec_bytes = row
            if batch_key is not None:
                seen = conn.execute(
                    "SELECT first_index, count FROM batches WHERE sid = ? AND batch_key = ?",
                    (sid, batch_key),
                ).fetchone()
                if seen is not None:
                    check_batch_size(batch_key, seen[1], len(tasks))
                    return [task_id(session_id, i) for i in range(seen[0], seen[0] + seen[1])]
            if is_cancelled:
                raise InvalidInput(f"session {session_id} is cancelled; it takes no new tasks")
            default_timeout_s = self._spec_decoder.decode(spec_bytes).timeout_s
            base = (sid << _INDEX_BITS) + first
            rows = [
                (
                    base + i,
                    sid,
                    t.handler,
                    t.codec.value,
                    t.payload,
                    t.payload_ref,
                    default_timeout_s if t.timeout_s is None else t.timeout_s,
                    now,
                )
                for i, t in enumerate(tasks)
            ]
            if first + len(rows) > _MAX_INDEX:
                raise InvalidInput(f"session {session_id} cannot hold more tasks")
            conn.executemany(_INSERT_TASK, rows)
            if batch_key is not None:
                conn.execute(
                    "INSERT INTO batches (sid, batch_key, first_index, count) VALUES (?, ?, ?, ?)",
                    (sid, batch_key, first, len(rows)),
                )
            conn.execute(
                "UPDATE sessions SET next_index = next_index + ?1, n_pending = n_pending + ?1"
                " WHERE sid = ?2",
                (len(rows), sid),
            )
        return [task_id(session_id, i) for i in range(first, first + len(rows))]

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        if max_tasks <= 0:
            return []
        if not self._has_pending():
            return []  # nothing to claim: leave the write lock to those with work to write
        expiry = now + lease_ttl_s
        with self._write() as conn:
            rows = conn.execute(
                "SELECT session_id, priority, n_pending, last_served, sid, spec"
                " FROM sessions INDEXED BY sessions_pending WHERE n_pending > 0"
            ).fetchall()
            candidates = [Candidate(*row[:4]) for row in rows]
            by_session = {row[0]: (row[4], row[5]) for row in rows}
            claims: list[Claim] = []
            for session_id, n in plan_claim(candidates, max_tasks):
                sid, spec_bytes = by_session[session_id]
                spec = self._spec_decoder.decode(spec_bytes)
                taken = self._claim_from(conn, sid, n, worker_id, expiry, now)
                claims.extend(
                    self._claim(session_id, spec, row, worker_id, expiry) for row in taken
                )
        return claims

    def _has_pending(self) -> bool:
        """Whether any session has pending tasks: a read, which never waits for writers.
        A submit wakes every idle worker; all but the first would otherwise queue for the
        write lock only to find the task taken, delaying the next submit or completion."""
        return self._conn().execute(_ANY_PENDING).fetchone() is not None

    def renew(
        self, worker_id: str, leases: Sequence[LeaseKey], lease_ttl_s: float, now: float
    ) -> list[bool]:
        expiry = now + lease_ttl_s
        with self._write() as conn:
            keys = _Keys(conn)
            held = []
            for lease in leases:
                key = keys.of(lease.task_id)
                params = (expiry, key, worker_id, lease.attempt)
                held.append(key is not None and conn.execute(_RENEW, params).rowcount == 1)
            return held

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, max_expiry=float("inf"))

    def expire(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, max_expiry=now)

    def expired(self, now: float, limit: int) -> list[Lease]:
        found = self._conn().execute(
            f"""SELECT t.key, s.session_id, t.worker_id, t.attempt, t.lease_expiry,
                    t.n_errors, t.n_timeouts, t.n_lost, s.spec
                FROM tasks AS t INDEXED BY tasks_running JOIN sessions AS s ON s.sid = t.sid
                WHERE t.state = {_RUNNING} AND t.lease_expiry <= ?
                ORDER BY t.lease_expiry LIMIT ?""",
            (now, max(0, limit)),
        )
        specs: dict[str, SessionSpec] = {}
        leases = []
        for key, session_id, worker_id, attempt, expiry, n_err, n_to, n_lost, spec_bytes in found:
            if session_id not in specs:
                specs[session_id] = self._spec_decoder.decode(spec_bytes)
            spec = specs[session_id]
            counters = (n_err, n_to, n_lost)
            index = key & _MAX_INDEX
            leases.append(
                convert.lease(session_id, index, spec, worker_id, attempt, expiry, counters)
            )
        return leases

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        with self._write({Wake.DONE}) as conn:
            row = conn.execute(
                "SELECT sid, last_done_seq FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id}")
            tally = _Tally(*row)
            if task_ids is None:
                conn.execute("UPDATE sessions SET is_cancelled = 1 WHERE sid = ?", (tally.sid,))
                self._cancel_all(conn, tally, now)
            else:
                self._cancel_some(conn, session_id, tally, task_ids, now)
            conn.execute(_BUMP_COUNTS, tally.row())
        return tally.deltas[_CANCELLED]

    def counts(self, session_id: str) -> Counts:
        row = (
            self._conn()
            .execute(
                "SELECT n_pending, n_running, n_succeeded, n_failed, n_cancelled"
                " FROM sessions WHERE session_id = ?",
                (session_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no session {session_id}")
        return convert.counts(row)

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        with self._read() as conn:
            keys = _Keys(conn)
            records = []
            for tid in task_ids:
                key = keys.of(tid)
                row = None
                if key is not None:
                    row = conn.execute(
                        f"SELECT {_RECORD_COLUMNS} FROM tasks WHERE key = ?", (key,)
                    ).fetchone()
                if row is None:
                    raise NotFound(f"no task {tid}")
                records.append(self._record(split_task_id(tid)[0], row))
            return records

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        with self._read() as conn:
            sid = self._sid(conn, session_id)
            rows = conn.execute(
                f"""SELECT {_RECORD_COLUMNS} FROM tasks INDEXED BY tasks_finished
                    WHERE sid = ? AND done_seq > ? ORDER BY done_seq LIMIT ?""",
                (sid, after, max(0, limit)),
            ).fetchall()
        return [self._record(session_id, row) for row in rows]

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_work(self, timeout_s: float) -> None:
        self._wait_until(Wake.WORK, self._seconds_to_work, timeout_s)

    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        def seconds_to_finished(conn: sqlite3.Connection) -> float:
            row = conn.execute(
                "SELECT last_done_seq FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            return 0.0 if row is None or row[0] > after else _NEVER

        self._wait_until(Wake.DONE, seconds_to_finished, timeout_s)

    def close(self) -> None:
        with self._handles_lock:
            self._is_closed = True
            for handle in list(self._handles):
                if handle.pid == os.getpid():  # a forked child leaves its parent's alone
                    handle.close()
            self._handles.clear()
            self._bells.close()
            if self._shm is not None:
                os.close(self._shm)
                self._shm = None

    # -- connections and transactions -----------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child, as
        SQLite connections must not cross a fork)."""
        if self._is_closed:
            raise BackendUnavailable(f"the store {self.url} was closed")
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None or handle.pid != os.getpid():
            if handle is not None:
                self._inherited.append(handle)  # the parent's: closing it here could harm it
            handle = self._local.handle = self._connect()
        return handle.conn

    def _connect(self) -> _Handle:
        with self._handles_lock:
            if self._is_closed:
                raise BackendUnavailable(f"the store {self.url} was closed")
            try:
                # autocommit (isolation_level=None): we issue BEGIN and COMMIT ourselves
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                # switching modes takes a lock that busy_timeout does not cover, so only the
                # first opener of a new file switches; everyone else finds WAL already set
                (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                # SQLite's own checkpoint only as a backstop: see _checkpoint_when_due
                conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_CHECKPOINT_PAGES}")
                gate = os.open(self._gate_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except (sqlite3.Error, OSError) as exc:
                raise BackendUnavailable(f"cannot open the store {self.url}: {exc}") from exc
            handle = _Handle(conn, gate)
            self._handles.add(handle)
            return handle

    def _gate_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}-gate")

    @contextmanager
    def _write(
        self, wakes: set[Wake] | None = None, n_tasks: int = 1
    ) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the file's write lock from its first statement, so
        concurrent writers queue instead of failing to upgrade a read lock; once it has
        committed, ring the ``wakes`` files for those waiting on what it did (up to
        ``n_tasks`` idle workers for WORK).

        Writers first queue on an exclusive ``flock`` of the gate file: the kernel hands it
        to the next in line the moment it is released, where SQLite's own lock can only be
        polled (see :func:`_take_write_lock`, still needed for writers outside htcgrid).
        """
        self._conn()  # this thread's handle, opened if it has none yet
        gate = self._local.handle.gate
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            with self._transaction(_take_write_lock) as conn:
                yield conn
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        if wakes:
            self._bells.ring(wakes, n_tasks)
        self._checkpoint_when_due()

    def _checkpoint_when_due(self) -> None:
        """Copy the WAL back into the database file once it holds CHECKPOINT_PAGES pages not
        yet copied, after this write's waiters are rung and the gate is free. SQLite's
        automatic checkpoint runs inside the COMMIT that crosses the threshold, with two
        fsyncs: a waiter rung after that COMMIT, and a writer queued on the gate, would wait
        for them. The backlog is read from the WAL index's header (its documented layout:
        the last frame at byte 16, the last frame copied back at byte 96); a passive
        checkpoint never waits for readers or writers."""
        try:
            shm = self._shm
            if shm is None:
                with self._handles_lock:  # one descriptor per backend, whichever thread opens it
                    if self._is_closed:
                        return
                    if self._shm is None:
                        self._shm = os.open(f"{self.path}-shm", os.O_RDONLY | os.O_CLOEXEC)
                    shm = self._shm
            head = os.pread(shm, 100, 0)  # closed meanwhile: EBADF, or a stray read below
        except OSError:
            return  # no WAL index to read: SQLite's backstop checkpoint still runs
        if len(head) < 100:
            return
        (last_frame,) = _WAL_FRAME.unpack_from(head, 16)
        (copied_back,) = _WAL_FRAME.unpack_from(head, 96)
        if last_frame - copied_back < _CHECKPOINT_PAGES:
            return
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, BackendUnavailable) as exc:
            # the write has committed whatever happens here; the next one tries again
            log.debug("checkpoint of %s skipped: %s", self.url, exc)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several statements see one snapshot."""
        with self._transaction(_begin) as conn:
            yield conn

    @contextmanager
    def _transaction(
        self, begin: Callable[[sqlite3.Connection], None]
    ) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            begin(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk full, I/O
            raise BackendUnavailable(f"the store {self.url} refused the operation: {exc}") from exc

    def _create_schema(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version != 0:
                raise BackendUnavailable(
                    f"the store {self.url} has schema version {version}; this htcgrid reads "
                    f"version {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- internals ------------------------------------------------------------------------
    def _sid(self, conn: sqlite3.Connection, session_id: str) -> int:
        row = conn.execute(
            "SELECT sid FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id}")
        sid: int = row[0]
        return sid

    def _claim_from(
        self, conn: sqlite3.Connection, sid: int, n: int, worker_id: str, expiry: float, now: float
    ) -> list[tuple[Any, ...]]:
        """Start the ``n`` oldest claimable tasks of one session and update its counters."""
        rows = conn.execute(_CLAIM_TASKS, (worker_id, expiry, sid, now, n)).fetchall()
        rows.sort()  # RETURNING has no order; hand tasks out oldest first
        conn.execute(
            "UPDATE sessions SET n_pending = n_pending - ?1, n_running = n_running + ?1,"
            " last_served = ?2 WHERE sid = ?3",
            (len(rows), now, sid),
        )
        return rows

    def _claim(
        self,
        session_id: str,
        spec: SessionSpec,
        row: tuple[Any, ...],
        worker_id: str,
        expiry: float,
    ) -> Claim:
        return convert.claim(session_id, spec, row, worker_id, expiry)

    def _end_attempts(
        self, completions: Sequence[Completion], now: float, max_expiry: float
    ) -> list[bool]:
        """Apply completions fenced by (worker, attempt) and, for the reaper, by expiry."""
        for c in completions:  # a bad state is a caller bug: refuse the batch before writing
            check_transition(TaskState.RUNNING, c.state)
        wakes = {Wake.WORK if c.state is TaskState.PENDING else Wake.DONE for c in completions}
        retried = sum(c.state is TaskState.PENDING for c in completions)
        with self._write(wakes, retried) as conn:
            keys = _Keys(conn)
            tallies: dict[int, _Tally] = {}
            accepted = [
                self._end_attempt(conn, keys, tallies, c, now, max_expiry) for c in completions
            ]
            conn.executemany(_BUMP_COUNTS, [tally.row() for tally in tallies.values()])
        return accepted

    def _end_attempt(
        self,
        conn: sqlite3.Connection,
        keys: _Keys,
        tallies: dict[int, _Tally],
        c: Completion,
        now: float,
        max_expiry: float,
    ) -> bool:
        key = keys.of(c.task_id)
        if key is None:
            return False
        sid = key >> _INDEX_BITS
        tally = tallies.get(sid)
        if tally is None:
            tally = tallies[sid] = self._tally(conn, sid)
        is_done = c.state is not TaskState.PENDING
        is_success = c.state is TaskState.SUCCEEDED
        failures = [0, 0, 0]
        if c.failure is not None:
            failures[_FAILURE_COLUMN[c.failure]] = 1
        params = (
            int(c.state),
            c.not_before,
            now if is_done else None,
            tally.last_done_seq + 1 if is_done else None,
            c.result if is_success else None,
            c.result_ref if is_success else None,
            None if c.error is None else self._encoder.encode(c.error),
            *failures,
            key,
            c.worker_id,
            c.attempt,
            max_expiry,
        )
        if conn.execute(_END_ATTEMPT, params).rowcount != 1:
            return False
        tally.move(_RUNNING, c.state)
        if is_done:
            tally.next_done_seq()
        return True

    def _tally(self, conn: sqlite3.Connection, sid: int) -> _Tally:
        row = conn.execute("SELECT last_done_seq FROM sessions WHERE sid = ?", (sid,)).fetchone()
        return _Tally(sid, row[0])

    def _cancel_all(self, conn: sqlite3.Connection, tally: _Tally, now: float) -> None:
        """Cancel every pending then every running task of a session, numbering them in the
        session's finished stream in key order."""
        for state, sql in _CANCEL_ALL.items():
            n = conn.execute(sql, (now, tally.last_done_seq, tally.sid)).rowcount
            tally.move(state, _CANCELLED, n)
            tally.last_done_seq += n

    def _cancel_some(
        self,
        conn: sqlite3.Connection,
        session_id: str,
        tally: _Tally,
        task_ids: Sequence[str],
        now: float,
    ) -> None:
        """Cancel the given tasks still pending or running; NotFound (and nothing changes,
        as the transaction rolls back) if any is not a task of this session."""
        keys = _Keys(conn)
        for tid in task_ids:
            key = keys.of(tid)
            row = None
            if key is not None and key >> _INDEX_BITS == tally.sid:
                row = conn.execute("SELECT state FROM tasks WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"no task {tid} in session {session_id}")
            if row[0] in (_PENDING, _RUNNING):
                conn.execute(_CANCEL_ONE, (now, tally.next_done_seq(), key))
                tally.move(row[0], _CANCELLED)

    def _seconds_to_work(self, conn: sqlite3.Connection) -> float:
        """0 when a task is claimable now, else how long until a delayed retry becomes so."""
        has_pending = conn.execute(
            "SELECT 1 FROM sessions INDEXED BY sessions_pending WHERE n_pending > 0 LIMIT 1"
        ).fetchone()
        if has_pending is None:
            return _NEVER
        now = time.time()
        ready = conn.execute(
            f"SELECT 1 FROM tasks WHERE state = {_PENDING} AND not_before <= ? LIMIT 1", (now,)
        ).fetchone()
        if ready is not None:
            return 0.0
        (next_at,) = conn.execute(
            f"SELECT min(not_before) FROM tasks WHERE state = {_PENDING}"
        ).fetchone()
        return 0.0 if next_at is None else max(0.0, next_at - now)

    def _wait_until(
        self,
        wake: Wake,
        seconds_to_ready: Callable[[sqlite3.Connection], float],
        timeout_s: float,
    ) -> None:
        """Block until ``seconds_to_ready`` says 0 or ``timeout_s`` passed.

        The condition is re-checked when a writer rings ``wake`` (see :mod:`wakefiles`),
        or, without a watch, whenever another process's commit changes ``PRAGMA
        data_version``, polled in growing steps.
        """
        deadline = time.monotonic() + timeout_s
        conn = self._conn()
        watch = self._watch(wake)
        while True:
            if watch is not None:
                watch.drain()  # before reading: a ring after the check still wakes the wait
            version = _data_version(conn)
            wait_s = min(seconds_to_ready(conn), deadline - time.monotonic())
            if wait_s <= 0:
                return
            if watch is None:
                is_changed = _sleep_until_change(conn, version, wait_s)
            else:
                is_changed = _watch_until_change(watch, conn, version, wait_s)
            if not is_changed:
                return

    def _watch(self, wake: Wake) -> AnyWatch | None:
        """This thread's watch on ``wake``, made on first use (None where unsupported)."""
        self._conn()  # opens this thread's handle if it has none yet
        watches: dict[Wake, AnyWatch | None] = self._local.handle.watches
        if wake not in watches:
            watches[wake] = open_watch(self.path, wake)
        return watches[wake]

    def _record(self, session_id: str, row: tuple[Any, ...]) -> TaskRecord:
        return convert.task_record(session_id, row)

    def _session_info(self, row: tuple[Any, ...]) -> SessionInfo:
        return convert.session_info(row)


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")


def _take_write_lock(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retried in short steps while another process writes.

    SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, so a writer that
    queued behind a 100-microsecond transaction would lose a millisecond or more: most of a
    single task's round trip. Writes here are short, so poll the lock from 20 us instead,
    within the same overall budget.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        pause = _LOCK_FIRST_PAUSE_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _LOCK_LAST_PAUSE_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")


def _data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def _watch_until_change(
    watch: AnyWatch, conn: sqlite3.Connection, version: int, wait_s: float
) -> bool:
    """Sleep until the watch is rung, up to ``wait_s``; True if it was, or if a commit was
    seen at one of the safety re-checks (a writer that rings nothing)."""
    until = time.monotonic() + wait_s
    while (left := until - time.monotonic()) > 0:
        if watch.wait(left) or _data_version(conn) != version:
            return True
    return False


def _sleep_until_change(conn: sqlite3.Connection, version: int, wait_s: float) -> bool:
    """Sleep up to ``wait_s`` in growing steps; True as soon as another connection commits."""
    until = time.monotonic() + wait_s
    pause = _FIRST_PAUSE_S
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(pause, left))
        if _data_version(conn) != version:
            return True
        pause = min(pause * 2, _LAST_PAUSE_S)
    return False
