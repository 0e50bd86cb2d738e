"""The shared multi-machine backend: the grid state in Redis, every write one Lua script.

Each write applies atomically to one session inside Redis (see ``scripts.py``); a call that
spans sessions (a claim split by fair share, a batch of completions) sends one script per
session in one pipelined round trip. Nothing is ever read, changed in Python and written
back: Python plans (fair share), validates (the transition table) and encodes; the scripts
apply the change only if the task is still where the caller saw it.

The store-wide structures that say which sessions may have work, and the streams that wake
blocked waiters, are hints kept by :mod:`htcgrid.backends.redis.readiness`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from htcgrid.backends.base import Capabilities, LeaseKey, check_batch_size, drifting
from htcgrid.backends.blobs import GridBlobStore, open_blob_dir, take_blob_dir
from htcgrid.backends.redis.blobs import RedisBlobStore
from htcgrid.backends.redis.link import Cmd, Eval, Link
from htcgrid.backends.redis.readiness import Readiness
from htcgrid.backends.redis.schema import (
    COUNTER_POSITION,
    Input,
    Outcome,
    SessionKeys,
    State,
    StoreKeys,
    split_url,
)
from htcgrid.backends.redis.scripts import (
    CANCEL,
    CLAIM,
    CREATE,
    DELETE,
    END_ATTEMPTS,
    EXPIRED,
    FINISHED,
    RECORDS,
    REGISTER,
    RENEW,
    SUBMIT,
)
from htcgrid.core.errors import BackendUnavailable, InvalidInput, NotFound
from htcgrid.core.fairshare import Candidate, plan_claim
from htcgrid.core.ids import check_session_id, split_task_id
from htcgrid.core.model import (
    Claim,
    Codec,
    Completion,
    Counts,
    Lease,
    NewTask,
    SessionInfo,
    SessionSpec,
    TaskRecord,
)
from htcgrid.core.states import TaskState, check_transition

#: Tasks one call of the CANCEL script cancels at most (about 40 ms of Redis time).
CANCEL_STEP = 10_000
_COUNT_FIELDS = ("n_pending", "n_running", "n_succeeded", "n_failed", "n_cancelled")
_INFO_FIELDS = ("spec", "created_at", "is_cancelled", *_COUNT_FIELDS)
_MAX_SPECS = 4096  # decoded specs kept, by their bytes
#: Finished records a wait fetches along with its wake-up: a latency-bound collector's whole
#: page; a caller that wants more gets the rest by a plain read.
PREFETCH = 256


def _num(x: float) -> str:
    """A float as a string Redis and Lua read back exactly."""
    return repr(float(x))


def _first_score(reply: list[Any]) -> float:
    """The score in a one-member ``ZRANGE … WITHSCORES`` reply, flat or paired by redis-py."""
    pair = reply[0] if isinstance(reply[0], list | tuple) else reply
    return float(pair[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _TaskIds:
    """Splits the task ids of one call into (session id, index as text), checking each
    distinct session id once: a batch's ids almost all share one session, and the index is
    sent to the scripts as text, as they use it (a hash field, a ZSET member)."""

    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: set[str] = set()

    def split(self, tid: str) -> tuple[str, str]:
        session_id, _, index = tid.rpartition(".")
        if (
            session_id in self._sessions
            and index.isascii()
            and index.isdecimal()
            and (index[0] != "0" or index == "0")
        ):
            return session_id, index
        session_id, number = split_task_id(tid)  # checks it, or raises InvalidInput
        self._sessions.add(session_id)
        return session_id, str(number)


def _counts(values: Sequence[Any]) -> Counts:
    pending, running, succeeded, failed, cancelled = (int(v) for v in values)
    return Counts(
        pending=pending, running=running, succeeded=succeeded, failed=failed, cancelled=cancelled
    )


class RedisBackend:
    """:class:`htcgrid.backends.base.Backend` on a Redis server shared by every grid process.

    Open it with :meth:`from_url`: ``redis://[:password@]host:port/db?prefix=NAME`` (or
    ``rediss://`` for TLS); every key starts with the prefix (default ``htcgrid``), so several
    grids can share one database.
    """

    def __init__(self, url: str) -> None:
        rest, blob_dir = take_blob_dir(url)
        redis_url, prefix = split_url(rest)
        self._url = url
        self._link = Link(redis_url)
        self._keys = StoreKeys(prefix)
        self._files = None if blob_dir is None else open_blob_dir(blob_dir)
        self._blob_link: Link | None = None
        self._blobs: GridBlobStore
        if self._files is not None:
            self._blobs = self._files
        else:  # on a link of their own: see Link's carries_payloads
            self._blob_link = Link(redis_url, carries_payloads=True)
            self._blobs = RedisBlobStore(self._blob_link, self._keys)
        self._encoder = msgspec.msgpack.Encoder()
        self._spec_decoder = msgspec.msgpack.Decoder(SessionSpec)
        self._state_decoder = msgspec.msgpack.Decoder(State)
        self._input_decoder = msgspec.msgpack.Decoder(Input)
        self._outcome_decoder = msgspec.msgpack.Decoder(Outcome)
        self._specs: dict[bytes, SessionSpec] = {}
        self._readiness = Readiness(self._link, self._keys)
        # pages of finished tasks fetched by wait_for_finished, by (session, after)
        self._lock = threading.Lock()
        self._prefetched: dict[tuple[str, int], list[TaskRecord]] = {}
        self._next_due: float | None = None  # earliest delayed retry the last claim saw
        # not repeated: a wrong URL (a TLS port, a firewalled host) should fail fast
        self._capabilities = Capabilities(
            is_durable=self._link.once(self._has_append_only_file), is_shared=True
        )

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """Open the store at ``redis://…`` or ``rediss://…`` (see the class docstring)."""
        return cls(url)

    @staticmethod
    def open_blobs(url: str) -> GridBlobStore:
        """The blobs of the store at ``url`` without its task state, on a connection of
        their own, made on first use."""
        rest, blob_dir = take_blob_dir(url)
        if blob_dir is not None:
            return open_blob_dir(blob_dir)
        redis_url, prefix = split_url(rest)
        return RedisBlobStore(Link(redis_url, carries_payloads=True), StoreKeys(prefix))

    @property
    def url(self) -> str:
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def blobs(self) -> GridBlobStore:
        return self._blobs

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        k = self._keys.session(check_session_id(session_id))
        token = uuid.uuid4().hex  # a repeated call after a lost answer finds its own session
        calls = [
            Eval(REGISTER, [self._keys.seq, self._keys.sessions], [session_id]),
            Eval(CREATE, [k.meta], [self._encoder.encode(spec), _num(now), spec.priority, token]),
        ]
        _, is_created = self._link.safely(lambda: self._link.run(calls))
        if not is_created:
            raise InvalidInput(f"session {session_id} already exists")
        return SessionInfo(
            session_id=session_id, spec=spec, created_at=now, is_cancelled=False, counts=Counts()
        )

    def get_session(self, session_id: str) -> SessionInfo:
        k = self._session_keys(session_id)
        row = self._link.safely(lambda: self._link.client.hmget(k.meta, _INFO_FIELDS))
        info = self._session_info(session_id, row)
        if info is None:
            raise NotFound(f"no session {session_id}")
        return info

    def list_sessions(self) -> list[SessionInfo]:
        def read() -> list[SessionInfo]:
            session_ids = self._readiness.session_ids()
            calls = [Cmd("HMGET", self._keys.session(s).meta, *_INFO_FIELDS) for s in session_ids]
            rows = self._link.run(calls)
            infos = (self._session_info(s, row) for s, row in zip(session_ids, rows, strict=True))
            return [info for info in infos if info is not None]  # None: deleted meanwhile

        return self._link.safely(read)

    def delete_session(self, session_id: str) -> None:
        k = self._session_keys(session_id)
        # not repeated automatically: a repeat after a lost answer would say NotFound
        if not self._link.once(lambda: self._link.call(DELETE, k.all(), [k.blob_prefix])):
            raise NotFound(f"no session {session_id}")
        if self._files is not None:
            self._files.delete_session(session_id)
        with self._lock:
            for key in [key for key in self._prefetched if key[0] == session_id]:
                del self._prefetched[key]
        self._readiness.forget(k)
        hints = [
            Cmd("ZREM", self._keys.sessions, session_id),
            Cmd("SREM", self._keys.ready, session_id),
        ]
        self._link.safely(lambda: self._link.run(hints))

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        k = self._session_keys(session_id)
        tasks = list(tasks)  # a batch that fails to read fails here, before anything is sent
        # every batch carries a key, so a submit repeated after a lost answer adds nothing
        field = f"u:{batch_key}" if batch_key is not None else f"a:{uuid.uuid4().hex}"
        encode = self._encoder.encode
        inputs = [
            encode(Input(t.handler, t.codec, t.payload, t.payload_ref, t.timeout_s)) for t in tasks
        ]
        # one initial state per codec of the batch, sent once; each task names its own
        slots: dict[Codec, int] = {}
        for t in tasks:
            slots.setdefault(t.codec, len(slots) + 1)
        states = [encode(State(0, 0, "", 0.0, 0.0, 0, 0, 0, now, 0.0, 0, codec)) for codec in slots]
        head = encode(
            [
                field,
                [len(b) for b in states],
                [len(b) for b in inputs],
                [slots[t.codec] for t in tasks] if len(slots) > 1 else None,
            ]
        )
        data = b"".join(states) + b"".join(inputs)
        calls: list[Eval | Cmd] = [Eval(SUBMIT, k.submit_keys(), [head, data])]
        if tasks:
            calls += self._readiness.mark([session_id], len(tasks))
        reply = self._link.safely(lambda: self._link.run(calls))[0]
        if reply[0] == -1:
            raise NotFound(f"no session {session_id}")
        if reply[0] == -3:
            raise InvalidInput(f"session {session_id} is cancelled; it takes no new tasks")
        first, count = reply[1], len(tasks)
        if reply[0] == -2:
            check_batch_size(batch_key or "", reply[2], count)
        return [f"{session_id}.{i}" for i in range(first, first + count)]

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        if max_tasks <= 0:
            return []
        # safe to repeat: a claim whose answer was lost leaves its tasks running under
        # leases nobody renews, and the reaper retries them when the leases expire
        clock = drifting(now)  # a claim that gets through late still grants a full lease
        return self._link.safely(lambda: self._claim(worker_id, max_tasks, lease_ttl_s, clock()))

    def renew(
        self, worker_id: str, leases: Sequence[LeaseKey], lease_ttl_s: float, now: float
    ) -> list[bool]:
        groups: dict[str, list[int]] = {}
        rows: dict[str, list[Any]] = {}
        split = _TaskIds().split
        for pos, lease in enumerate(leases):
            session_id, index = split(lease.task_id)
            if session_id not in groups:
                groups[session_id] = []
                rows[session_id] = []
            groups[session_id].append(pos)
            rows[session_id] += (index, lease.attempt)
        clock = drifting(now)
        encode = self._encoder.encode

        def extend() -> list[Any]:  # idempotent; a late try extends from when it runs
            expiry = clock() + lease_ttl_s
            calls = [
                Eval(RENEW, self._keys.session(s).renew_keys(), [encode([expiry, worker_id, r])])
                for s, r in rows.items()
            ]
            return self._link.run(calls)

        # Tried once: the heartbeat's next beat renews again, and a renewal repeated with
        # backoff (each try up to the connect timeout on a dead link) could outlast the
        # leases it means to extend before the heartbeat even hears of the failure.
        replies = self._link.once(extend)
        return self._scatter(len(leases), groups, replies)

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, require_expired=False)

    def expire(self, completions: Sequence[Completion], now: float) -> list[bool]:
        return self._end_attempts(completions, now, require_expired=True)

    def expired(self, now: float, limit: int) -> list[Lease]:
        if limit <= 0:
            return []

        def read() -> list[Lease]:
            session_ids = self._readiness.session_ids()
            calls = [
                Eval(EXPIRED, self._keys.session(s).expired_keys(), [_num(now), limit])
                for s in session_ids
            ]
            leases: list[Lease] = []
            for session_id, reply in zip(session_ids, self._link.run(calls), strict=True):
                if reply:
                    spec = self._spec(reply[0])
                    for index, state in zip(reply[1], reply[2], strict=True):
                        s = self._state_decoder.decode(state)
                        if s.lease_expiry <= now:
                            leases.append(self._lease(session_id, _text(index), s, spec))
            leases.sort(key=lambda x: x.lease_expiry)
            return leases[:limit]

        return self._link.safely(read)

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        k = self._session_keys(session_id)
        if task_ids is None:
            args: list[Any] = [_num(now), "all", CANCEL_STEP]
        else:
            args = [_num(now), "some"]
            for tid in task_ids:
                owner, index = split_task_id(tid)
                if owner != session_id:
                    raise NotFound(f"no task {tid} in session {session_id}")
                args.append(index)
        keys = k.transition_keys()
        n = 0
        is_more = True
        while is_more:
            # safe to repeat: a repeat cancels nothing more (the count is then too low)
            reply = self._link.safely(lambda: self._link.call(CANCEL, keys, args))
            if reply[0] == -1:
                raise NotFound(f"no session {session_id}")
            if reply[0] == -2:
                bad = f"{session_id}.{args[reply[1] + 1]}"
                raise NotFound(f"no task {bad} in session {session_id}")
            n += reply[1]
            is_more = bool(reply[2])
        return n

    def counts(self, session_id: str) -> Counts:
        k = self._session_keys(session_id)
        row = self._link.safely(lambda: self._link.client.hmget(k.meta, _COUNT_FIELDS))
        if row[0] is None:
            raise NotFound(f"no session {session_id}")
        return _counts(row)

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        groups: dict[str, list[int]] = {}
        indexes: dict[str, list[str]] = {}
        for pos, tid in enumerate(task_ids):
            session_id, index = split_task_id(tid)
            groups.setdefault(session_id, []).append(pos)
            indexes.setdefault(session_id, []).append(str(index))
        calls = [Eval(RECORDS, self._keys.session(s).records_keys(), indexes[s]) for s in groups]
        replies = self._link.safely(lambda: self._link.run(calls))
        records: list[TaskRecord | None] = [None] * len(task_ids)
        for (session_id, positions), reply in zip(groups.items(), replies, strict=True):
            if reply[0] == 0:
                raise NotFound(f"no task {task_ids[positions[0]]}")
            rows = zip(positions, indexes[session_id], reply[1], reply[2], strict=True)
            for pos, i, state, outcome in rows:
                if state is None:
                    raise NotFound(f"no task {task_ids[pos]}")
                records[pos] = self._record(session_id, i, state, outcome)
        return [r for r in records if r is not None]

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        with self._lock:
            records = self._prefetched.pop((session_id, after), None)
        if records is not None:
            if len(records) >= limit:
                return records[: max(0, limit)]
            if len(records) < PREFETCH:  # the page the wait fetched has all there was
                return records
            last = records[-1].done_seq
            rest_after = after + len(records) if last is None else last
            return records + self.finished(session_id, rest_after, limit - len(records))
        k = self._session_keys(session_id)
        args = [max(0, after), max(0, limit)]
        reply = self._link.safely(lambda: self._link.call(FINISHED, k.finished_keys(), args))
        return self._records(session_id, reply)

    def _records(self, session_id: str, reply: list[Any]) -> list[TaskRecord]:
        """The records of a FINISHED reply; NotFound if it says the session is gone."""
        if reply[0] == 0:
            raise NotFound(f"no session {session_id}")
        rows = zip(reply[1], reply[2], reply[3], strict=True)
        return [self._record(session_id, _text(i), state, outcome) for i, state, outcome in rows]

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_work(self, timeout_s: float) -> None:
        deadline = time.monotonic() + max(0.0, timeout_s)

        self._wait_out(lambda: self._readiness.wait_for_work(deadline, self._next_due), deadline)

    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        """Block on the session's events stream; the first page past ``after`` comes back in
        the same round trip and is kept for the ``finished`` call that follows."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            k = self._keys.session(check_session_id(session_id))
        except InvalidInput:
            return  # no such session: the caller's next read says so
        fetch = Eval(FINISHED, k.finished_keys(), [max(0, after), PREFETCH])

        def wait() -> None:
            reply = self._readiness.wait_for_finished(k, after, deadline, fetch)
            if reply is None or reply[0] == 0 or not reply[1]:
                return  # nothing to keep: finished() reads (and reports a missing session)
            records = self._records(session_id, reply)
            with self._lock:
                if len(self._prefetched) >= 64:  # abandoned cursors: drop them all
                    self._prefetched.clear()
                self._prefetched[(session_id, after)] = records

        self._wait_out(wait, deadline)

    def _wait_out(self, wait: Callable[[], None], deadline: float) -> None:
        """Run a wait; if the server is unreachable, sleep out the deadline instead of raising
        (the port's waits never raise: the caller's next real call reports the outage)."""
        try:
            self._link.safely(wait)
        except BackendUnavailable:
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._link.close()
        if self._blob_link is not None:
            self._blob_link.close()

    # -- internals ------------------------------------------------------------------------
    def _has_append_only_file(self) -> bool:
        """Whether the server logs writes to an append-only file (no, if CONFIG is denied)."""
        try:
            config = self._link.client.config_get("appendonly")
        except ResponseError:  # CONFIG renamed or not allowed for this user
            return False
        return _text(config.get("appendonly") or "no") == "yes"

    def _session_keys(self, session_id: str) -> SessionKeys:
        """The keys of ``session_id``; NotFound for an id no session can have."""
        try:
            return self._keys.session(check_session_id(session_id))
        except InvalidInput:
            raise NotFound(f"no session {session_id!r}") from None

    def _session_info(self, session_id: str, row: Sequence[Any]) -> SessionInfo | None:
        spec, created_at, is_cancelled, *counts = row
        if spec is None:
            return None
        return SessionInfo(
            session_id=session_id,
            spec=self._spec(spec),
            created_at=float(created_at),
            is_cancelled=is_cancelled == b"1",
            counts=_counts(counts),
        )

    def _spec(self, data: bytes) -> SessionSpec:
        spec = self._specs.get(data)
        if spec is None:
            if len(self._specs) >= _MAX_SPECS:
                self._specs.clear()
            spec = self._specs[data] = self._spec_decoder.decode(data)
        return spec

    def _claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> list[Claim]:
        """Claim by fair share from the ready sessions (see :meth:`_claim_ready`)."""
        claims, again = self._claim_ready(worker_id, max_tasks, lease_ttl_s, now)
        if again and len(claims) < max_tasks:
            # tasks came while we dropped their session from the hint: look once more
            claims += self._claim_ready(worker_id, max_tasks - len(claims), lease_ttl_s, now)[0]
        return claims

    def _claim_ready(
        self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float
    ) -> tuple[list[Claim], bool]:
        """One claim over the ready hint: the claims, and whether dropping the drained
        sessions found new tasks."""
        self._next_due = None
        session_ids = self._readiness.ready()
        if not session_ids:
            return [], False
        drained: dict[str, int] = {}  # session -> pending count seen
        if len(session_ids) == 1:
            # fair share has nothing to split: skip the candidate read (a round trip) and
            # let the script take up to max_tasks, as plan_claim would have planned
            plan = [(session_ids[0], max_tasks)]
        else:
            plan = self._plan(session_ids, max_tasks, now, drained)
        expiry = _num(now + lease_ttl_s)
        claim_calls: list[Eval | Cmd] = []
        for s, n in plan:
            k = self._keys.session(s)
            claim_calls.append(Eval(CLAIM, k.claim_keys(), [n, worker_id, expiry, _num(now)]))
        claims: list[Claim] = []
        for (s, _), reply in zip(plan, self._link.run(claim_calls), strict=True):
            if not reply:  # deleted since the plan
                drained.setdefault(s, 0)
                continue
            if len(reply) == 3:
                # took nothing: drained, or only retries that are not due yet. A session a
                # claim drains stays in the hint until a claim finds it empty, so that the
                # drop's round trips are not paid between a claim and its dispatch.
                drained.setdefault(s, int(reply[1]))
                if due := float(reply[2]):
                    self._next_due = due if self._next_due is None else min(self._next_due, due)
                continue
            spec = self._spec(reply[0])
            claims += (
                self._claim_of(s, spec, reply[j], reply[j + 1], reply[j + 2])
                for j in range(3, len(reply), 3)
            )
        again = self._readiness.drop(drained) if drained else False
        return claims, again

    def _plan(
        self, session_ids: list[str], max_tasks: int, now: float, drained: dict[str, int]
    ) -> list[tuple[str, int]]:
        """Split a claim between ready sessions by fair share, from a read of each one's
        priority, last service and claimable count; collect the drained ones in ``drained``,
        and note when the earliest retry of the others falls due."""
        calls: list[Eval | Cmd] = []
        for s in session_ids:
            k = self._keys.session(s)
            calls.append(Cmd("HMGET", k.meta, "priority", "last_served", "n_pending"))
            calls.append(Cmd("ZCARD", k.pending))
            calls.append(Cmd("ZRANGE", k.delayed, 0, 0, "WITHSCORES"))
            calls.append(Cmd("ZCOUNT", k.delayed, "-inf", _num(now)))
        replies = self._link.run(calls)
        candidates: list[Candidate] = []
        for j, s in enumerate(session_ids):
            (priority, last_served, n_pending), n_ready, first, n_due = replies[4 * j : 4 * j + 4]
            if not n_pending or int(n_pending) == 0:
                drained[s] = 0
            elif n_ready + n_due > 0:
                candidates.append(Candidate(s, int(priority), n_ready + n_due, float(last_served)))
            elif first:  # only retries that are not due yet
                due = _first_score(first)
                self._next_due = due if self._next_due is None else min(self._next_due, due)
        return plan_claim(candidates, max_tasks)

    def _claim_of(
        self, session_id: str, spec: SessionSpec, index: bytes, state: bytes, data: bytes
    ) -> Claim:
        s = self._state_decoder.decode(state)
        task = self._input_decoder.decode(data)
        return Claim(
            lease=self._lease(session_id, index.decode(), s, spec),
            session_id=session_id,
            handler=task.handler,
            codec=task.codec,
            payload=task.payload,
            payload_ref=task.payload_ref,
            timeout_s=spec.timeout_s if task.timeout_s is None else task.timeout_s,
        )

    def _end_attempts(
        self, completions: Sequence[Completion], now: float, require_expired: bool
    ) -> list[bool]:
        for c in completions:  # a bad state is a caller bug: refuse the batch before writing
            check_transition(TaskState.RUNNING, c.state)
        groups: dict[str, list[int]] = {}
        rows: dict[str, list[Any]] = {}
        outcomes: dict[str, list[bytes]] = {}
        retried: list[str] = []
        split = _TaskIds().split
        encode = self._encoder.encode
        for pos, c in enumerate(completions):
            session_id, index = split(c.task_id)
            if session_id not in groups:
                groups[session_id] = []
                rows[session_id] = []
                outcomes[session_id] = []
            groups[session_id].append(pos)
            outcome = encode(Outcome(c.result, c.result_ref, c.error))
            outcomes[session_id].append(outcome)
            rows[session_id] += (
                index,
                c.worker_id,
                c.attempt,
                int(c.state),
                0 if c.failure is None else COUNTER_POSITION[c.failure],
                c.not_before,
                len(outcome),
            )
            if c.state is TaskState.PENDING and session_id not in retried:
                retried.append(session_id)
        calls: list[Eval | Cmd] = [
            Eval(
                END_ATTEMPTS,
                self._keys.session(s).transition_keys(),
                [encode([now, require_expired, r]), b"".join(outcomes[s])],
            )
            for s, r in rows.items()
        ]
        if retried:
            n_retried = sum(1 for c in completions if c.state is TaskState.PENDING)
            calls += self._readiness.mark(retried, n_retried)
        # safe to repeat: an outcome applied before the answer was lost is then refused by
        # the fence (reported False) but stays applied
        replies = self._link.safely(lambda: self._link.run(calls))
        return self._scatter(len(completions), groups, replies)

    @staticmethod
    def _scatter(n: int, groups: dict[str, list[int]], replies: list[Any]) -> list[bool]:
        """Put per-session script answers back in the order of the caller's batch."""
        flags = [False] * n
        for positions, reply in zip(groups.values(), replies[: len(groups)], strict=True):
            for pos, flag in zip(positions, reply, strict=True):
                flags[pos] = flag == 1
        return flags

    def _lease(self, session_id: str, index: str, s: State, spec: SessionSpec) -> Lease:
        return Lease(
            task_id=f"{session_id}.{index}",
            worker_id=s.worker_id,
            attempt=s.attempt,
            lease_expiry=s.lease_expiry,
            max_attempts=spec.max_attempts,
            retry_backoff_s=spec.retry_backoff_s,
            n_errors=s.n_errors,
            n_timeouts=s.n_timeouts,
            n_lost=s.n_lost,
        )

    def _record(
        self, session_id: str, index: str, state: bytes, outcome: bytes | None
    ) -> TaskRecord:
        s = self._state_decoder.decode(state)
        o = None if outcome is None else self._outcome_decoder.decode(outcome)
        task_state = TaskState(s.state)
        is_success = o is not None and task_state is TaskState.SUCCEEDED
        return TaskRecord(
            task_id=f"{session_id}.{index}",
            session_id=session_id,
            state=task_state,
            codec=s.codec,
            attempt=s.attempt,
            n_errors=s.n_errors,
            n_timeouts=s.n_timeouts,
            n_lost=s.n_lost,
            submitted_at=s.submitted_at,
            finished_at=s.finished_at if s.done_seq else None,
            result=o.result if is_success and o else None,
            result_ref=o.result_ref if is_success and o else None,
            error=o.error if o else None,
            done_seq=s.done_seq or None,
        )
