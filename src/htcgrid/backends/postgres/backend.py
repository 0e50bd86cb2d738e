"""The shared, durable backend: the grid's state in PostgreSQL, reached by every machine.

Every port call is one short transaction (or one statement) however many tasks it touches:
batches travel as arrays. The locking protocol that keeps counters exact and free of
deadlocks: **every transaction that changes task states locks the rows of the sessions it
touches first, in ``sid`` order**, then the task rows in key order, and updates the sessions'
counters and ``last_done_seq`` before it commits. Renewals are the one exception: they change
only the lease expiry of running tasks, lock just those rows (in key order) and never wait
for a session. So the rows of a session's pending tasks are only ever locked by a transaction
that holds the session's row: claims take them ``FOR UPDATE`` (retries with ``SKIP LOCKED``)
and never wait for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from htcgrid.backends import rows as convert
from htcgrid.backends.base import Capabilities, LeaseKey, check_batch_size, drifting
from htcgrid.backends.blobs import GridBlobStore, open_blob_dir, take_blob_dir
from htcgrid.core.errors import BackendUnavailable, InvalidInput, NotFound
from htcgrid.core.ids import check_session_id, task_id
from htcgrid.core.model import (
    Claim,
    Completion,
    Counts,
    ErrorInfo,
    Lease,
    NewTask,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState, check_transition

from .address import Address
from .blobs import PostgresBlobStore
from .changes import Attempts, Tally, counter_params
from .connections import Conn, Connections
from .keys import MAX_INDEX, index_of, key_range, parse_task_id, task_key
from .queries import Sql
from .schema import migrate

_PENDING, _RUNNING = int(TaskState.PENDING), int(TaskState.RUNNING)
_MAX_BIGINT = (1 << 63) - 1
_NEVER = float("inf")
_CHANGED_UNDER_LOCK = "tasks changed under their locks (a bug); nothing was applied"


log = logging.getLogger(__name__)

#: A claim answered after this fraction of the lease TTL is rolled back and made again.
_LATE_CLAIM = 0.25
_LATE_CLAIM_TRIES = 3


class _NothingTaken(Exception):
    """Raised inside a claim's transaction that took no task, to roll it back: it locked
    the sessions it planned (their row locks are written to the WAL), and a COMMIT would
    wait for a flush while holding them, and with them the completion of the claim that
    took the tasks (a lone task's: W2). What it wrote besides is a hint (``last_served``,
    the ``fresh_from`` window of a session it found empty) that the next claim recomputes."""


class _LateClaim(Exception):
    """A claim's answer came so late that its leases may be expired when committed."""


class PostgresBackend:
    """:class:`htcgrid.backends.base.Backend` on PostgreSQL, shared by every grid process.

    Open it with ``postgresql://user@host:5432/db?schema=NAME`` (default schema ``htcgrid``);
    the grid creates and migrates its tables in that schema.
    """

    def __init__(self, url: str) -> None:
        rest, blob_dir = take_blob_dir(url)
        self._address = Address.parse(rest, url)
        self._db = Connections(self._address)
        self._sql = Sql().bound(self._address.quoted_schema)
        self._work_channel = self._address.channel("work")
        self._finished_channel = self._address.channel("finished")
        self._files = None if blob_dir is None else open_blob_dir(blob_dir)
        self._blobs: GridBlobStore = self._files or PostgresBlobStore(self._db, self._sql)
        self._spec_decoder = msgspec.msgpack.Decoder(SessionSpec)
        self._error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
        self._encoder = msgspec.msgpack.Encoder()
        address = self._address
        try:
            self._db.transaction(
                lambda conn: migrate(conn, address.schema, address.quoted_schema, address.url)
            )
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        """Open the store at ``postgresql://...[?schema=NAME]``."""
        return cls(url)

    @staticmethod
    def open_blobs(url: str) -> GridBlobStore:
        """The blobs of the store at ``url`` without its task state (the schema must exist:
        a backend made it), on a connection of their own, made on first use."""
        rest, blob_dir = take_blob_dir(url)
        if blob_dir is not None:
            return open_blob_dir(blob_dir)
        address = Address.parse(rest, url)
        return PostgresBlobStore(Connections(address), Sql().bound(address.quoted_schema))

    @property
    def url(self) -> str:
        return self._address.url

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(is_durable=True, is_shared=True, wait_sees_work=True)

    @property
    def blobs(self) -> GridBlobStore:
        return self._blobs

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        check_session_id(session_id)
        params = (session_id, spec.priority, now, self._encoder.encode(spec))

        def create(conn: Conn) -> bool:
            return conn.execute(self._sql.create_session, params).fetchone() is not None

        if not self._db.statement(create, is_idempotent=False):
            raise InvalidInput(f"session {session_id} already exists")
        return SessionInfo(
            session_id=session_id, spec=spec, created_at=now, is_cancelled=False, counts=Counts()
        )

    def get_session(self, session_id: str) -> SessionInfo:
        row = self._db.read(
            lambda conn: conn.execute(self._sql.get_session, [session_id]).fetchone()
        )
        if row is None:
            raise NotFound(f"no session {session_id}")
        return self._session_info(row)

    def list_sessions(self) -> list[SessionInfo]:
        rows = self._db.read(lambda conn: conn.execute(self._sql.list_sessions).fetchall())
        return [self._session_info(row) for row in rows]

    def delete_session(self, session_id: str) -> None:
        def delete(conn: Conn) -> None:
            sid = self._lock_session(conn, session_id)[0]
            first, last = key_range(sid)
            params = {"sid": sid, "session_id": session_id, "first": first, "last": last}
            conn.execute(self._sql.lock_running, [sid])
            conn.execute(self._sql.delete_session, params)

        self._db.transaction(delete)
        if self._files is not None:
            self._files.delete_session(session_id)

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        columns: dict[str, list[Any]] = {
            "handlers": [],
            "codecs": [],
            "payloads": [],
            "payload_refs": [],
            "timeouts": [],
        }
        for t in tasks:  # read the whole batch before writing: a failing one adds nothing
            columns["handlers"].append(t.handler)
            columns["codecs"].append(t.codec.value)
            columns["payloads"].append(t.payload)
            columns["payload_refs"].append(t.payload_ref)
            columns["timeouts"].append(None if t.timeout_s is None else float(t.timeout_s))
        n = len(columns["handlers"])
        params = {
            **columns,
            "session_id": session_id,
            "batch_key": batch_key,
            "now": now,
            "max_index": MAX_INDEX,
            "work_channel": self._work_channel,
        }

        def add(conn: Conn) -> tuple[int, int, int]:
            row = conn.execute(self._sql.submit, params).fetchone()
            assert row is not None  # the function always answers one row
            return row[0], row[1], row[2]

        # One statement (submit_tasks locks, checks and inserts in the server), atomic on
        # its own. Repeated after a break only with a batch key, which makes a repeat
        # return the first acceptance instead of adding the batch twice.
        status, first, count = self._db.statement(add, is_idempotent=batch_key is not None)
        if status == -1:
            raise NotFound(f"no session {session_id}")
        if status == -2:
            check_batch_size(batch_key or "", count, n)
        elif status == -3:
            raise InvalidInput(f"session {session_id} is cancelled; it takes no new tasks")
        elif status == -4:
            raise InvalidInput(f"session {session_id} cannot hold more tasks")
        return [task_id(session_id, i) for i in range(first, first + count)]

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        if max_tasks <= 0:
            return []
        clock = drifting(now)
        expiry = now + lease_ttl_s
        params: dict[str, Any] = {"worker_id": worker_id, "max_tasks": max_tasks, "now": now}

        def take(conn: Conn) -> list[tuple[Any, ...]]:
            nonlocal expiry
            sent = time.monotonic()
            expiry = clock() + lease_ttl_s  # counted from now: a replay grants a full lease
            params["expiry"] = expiry
            rows = conn.execute(self._sql.claim, params, binary=True).fetchall()
            if not rows:
                raise _NothingTaken
            if time.monotonic() - sent > lease_ttl_s * _LATE_CLAIM:
                raise _LateClaim  # roll back: these leases have been running out all along
            return rows

        # One statement (claim_tasks plans, locks and takes in the server), in a transaction
        # all the same: a statement held up by a broken link reaches the server when the link
        # comes back, seconds later, with leases counted from when it was sent. Its answer is
        # late too, and the transaction is rolled back (never committed) and the claim made
        # afresh; a break before COMMIT is replayed at once, if at all.
        for _ in range(_LATE_CLAIM_TRIES):
            try:
                rows = self._db.transaction(take, is_timely=True)
                break
            except _NothingTaken:
                return []
            except _LateClaim:
                log.info("a claim was answered late; it was rolled back and is made again")
        else:
            raise BackendUnavailable(f"the store {self.url} answers claims too late to lease")
        specs: dict[str, SessionSpec] = {}
        claims = []
        for session_id, spec, *task in rows:  # plan order, then oldest first
            if spec is not None:  # on the first row of each session
                specs[session_id] = self._spec_decoder.decode(spec)
            if task[-1] is None:  # submitted without a timeout: the session's default
                task[-1] = specs[session_id].timeout_s
            claims.append(convert.claim(session_id, specs[session_id], task, worker_id, expiry))
        return claims

    def renew(
        self, worker_id: str, leases: Sequence[LeaseKey], lease_ttl_s: float, now: float
    ) -> list[bool]:
        keys = [parse_task_id(lease.task_id) for lease in leases]
        asked = [(*k, x.attempt) for k, x in zip(keys, leases, strict=True) if k is not None]
        if not asked:
            return [False] * len(keys)
        params = {
            "session_ids": [a[0] for a in asked],
            "idxs": [a[1] for a in asked],
            "attempts": [a[2] for a in asked],
            "worker_id": worker_id,
            "expiry": now + lease_ttl_s,
        }
        clock = drifting(now)

        def extend(conn: Conn) -> set[tuple[str, int, int]]:
            params["expiry"] = clock() + lease_ttl_s
            return {(row[0], row[1], row[2]) for row in conn.execute(self._sql.renew, params)}

        held = self._db.statement(extend, is_idempotent=True, is_timely=True)
        return [
            k is not None and (*k, x.attempt) in held for k, x in zip(keys, leases, strict=True)
        ]

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, max_expiry=_NEVER)

    def expire(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, max_expiry=now)

    def expired(self, now: float, limit: int) -> list[Lease]:
        params = {"now": now, "limit": max(0, limit)}
        found = self._db.read(lambda conn: conn.execute(self._sql.expired, params).fetchall())
        specs: dict[bytes, SessionSpec] = {}
        leases = []
        for session_id, idx, worker_id, attempt, expiry, n_err, n_to, n_lost, spec_bytes in found:
            spec = specs.get(spec_bytes)
            if spec is None:
                spec = specs[spec_bytes] = self._spec_decoder.decode(spec_bytes)
            counters = (n_err, n_to, n_lost)
            leases.append(
                convert.lease(session_id, idx, spec, worker_id, attempt, expiry, counters)
            )
        return leases

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        if task_ids is None:
            return self._db.transaction(lambda conn: self._cancel_all(conn, session_id, now))
        ids = list(task_ids)
        return self._db.transaction(lambda conn: self._cancel_some(conn, session_id, ids, now))

    def counts(self, session_id: str) -> Counts:
        row = self._db.read(lambda conn: conn.execute(self._sql.counts, [session_id]).fetchone())
        if row is None:
            raise NotFound(f"no session {session_id}")
        return convert.counts(row)

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        keys = []
        for tid in task_ids:
            key = parse_task_id(tid)
            if key is None:
                raise NotFound(f"no task {tid}")
            keys.append(key)
        if not keys:
            return []
        params = {"session_ids": [k[0] for k in keys], "idxs": [k[1] for k in keys]}
        rows = self._db.read(
            lambda conn: conn.execute(self._sql.tasks, params, binary=True).fetchall()
        )
        found = {(row[0], index_of(row[1])): row[1:] for row in rows}
        records = []
        for tid, key in zip(task_ids, keys, strict=True):
            row = found.get(key)
            if row is None:
                raise NotFound(f"no task {tid}")
            records.append(self._record(key[0], row))
        return records

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        after = max(0, after)  # done_seq counts 1, 2, 3... with no gap: a page is a key range
        until = min(after + max(0, limit), _MAX_BIGINT)
        params = {"session_id": session_id, "after": after, "until": until}
        rows = self._db.read(
            lambda conn: conn.execute(self._sql.finished, params, binary=True).fetchall()
        )
        if not rows:
            raise NotFound(f"no session {session_id}")
        return [self._record(session_id, row) for row in rows if row[0] is not None]

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_work(self, timeout_s: float) -> None:
        self._db.wait(self._work_channel, self._seconds_to_work, timeout_s)

    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        def seconds_to_finished(conn: Conn) -> float:
            row = conn.execute(self._sql.last_done_seq, [session_id]).fetchone()
            return 0.0 if row is None or row[0] > after else _NEVER

        self._db.wait(self._finished_channel, seconds_to_finished, timeout_s, payload=session_id)

    def close(self) -> None:
        self._db.close()

    # -- internals ------------------------------------------------------------------------
    def _lock_session(self, conn: Conn, session_id: str) -> tuple[int, int]:
        """Lock a session's row; its (sid, last_done_seq), or NotFound."""
        row = conn.execute(self._sql.lock_session, [session_id]).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id}")
        return row[0], row[1]

    def _end_attempts(
        self, completions: Sequence[Completion], now: float, max_expiry: float
    ) -> list[bool]:
        """Apply completions fenced by (worker, attempt) and, for the reaper, by expiry, in
        one statement (the end_attempts function locks, checks and writes in the server)."""
        for c in completions:  # a bad state is a caller bug: refuse the batch before writing
            check_transition(TaskState.RUNNING, c.state)
        attempts = Attempts(self._encoder)
        for position, c in enumerate(completions):
            key = parse_task_id(c.task_id)
            if key is not None:
                attempts.add(position, key[0], key[1], c)
        accepted = [False] * len(completions)
        if not attempts.positions:
            return accepted
        params = {
            **attempts.columns,
            "now": now,
            "max_expiry": max_expiry,
            "finished_channel": self._finished_channel,
            "work_channel": self._work_channel,
        }

        def end(conn: Conn) -> list[int]:
            row = conn.execute(self._sql.end_attempts, params, binary=True).fetchone()
            return [] if row is None else list(row[0])

        # Not idempotent in its answer: a replay of an applied batch would be refused.
        for n in self._db.statement(end, is_idempotent=False):
            accepted[attempts.positions[n - 1]] = True
        return accepted

    def _cancel_all(self, conn: Conn, session_id: str, now: float) -> int:
        """Close the session and cancel its pending and running tasks, numbering them in the
        finished stream in index order."""
        row = conn.execute(self._sql.cancel_close, [session_id]).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id}")
        sid, last_done_seq, fresh_from = row
        params = {
            "sid": sid,
            "first_key": task_key(sid, fresh_from),
            "last_key": key_range(sid)[1],
            "session_id": session_id,
            "last_done_seq": last_done_seq,
            "now": now,
            "finished_channel": self._finished_channel,
        }
        result = conn.execute(self._sql.cancel_all, params).fetchone()
        return 0 if result is None else int(result[0])

    def _cancel_some(self, conn: Conn, session_id: str, task_ids: list[str], now: float) -> int:
        """Cancel the given tasks still pending or running, in the given order; NotFound (and
        nothing changes, as the transaction rolls back) if any is not a task of the session."""
        tally = Tally(*self._lock_session(conn, session_id))
        keys = []
        for tid in task_ids:
            i = parse_task_id(tid)
            if i is None or i[0] != session_id:
                raise NotFound(f"no task {tid} in session {session_id}")
            keys.append(task_key(tally.sid, i[1]))
        cursor = conn.execute(self._sql.lock_tasks, [sorted(set(keys))])
        found = {key: (state, attempt) for key, state, _, attempt, _ in cursor}
        picked: dict[int, int] = {}  # key -> done_seq
        for tid, key in zip(task_ids, keys, strict=True):
            if key not in found:
                raise NotFound(f"no task {tid} in session {session_id}")
            state, attempt = found[key]
            if state in (_PENDING, _RUNNING) and key not in picked:
                picked[key] = tally.next_done_seq()
                tally.move(state, TaskState.CANCELLED)
                tally.fresh_holes += attempt == 0  # a claim must now look past it
        if not picked:
            return 0
        params = {
            "keys": list(picked),
            "done_seqs": list(picked.values()),
            "now": now,
            **counter_params([tally]),
            "finished": [session_id],
            "finished_channel": self._finished_channel,
            "work_channel": self._work_channel,
            "has_retry": False,
        }
        row = conn.execute(self._sql.cancel_some, params).fetchone()
        if row is None or row[0] != len(picked):
            raise BackendUnavailable(_CHANGED_UNDER_LOCK)  # rolls back; never expected
        return len(picked)

    def _seconds_to_work(self, conn: Conn) -> float:
        """0 when a task is claimable now, else how long until a delayed retry becomes so."""
        now = time.time()
        row = conn.execute(self._sql.work_ready, [now]).fetchone()
        if row is None:
            return _NEVER
        is_ready, next_due = row
        if is_ready:
            return 0.0
        return _NEVER if next_due is None else max(0.0, float(next_due) - now)

    def _record(self, session_id: str, row: Sequence[Any]) -> TaskRecord:
        return convert.task_record(session_id, row)

    def _session_info(self, row: Sequence[Any]) -> SessionInfo:
        return convert.session_info(row)
