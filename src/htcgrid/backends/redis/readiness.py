"""Which sessions may have work, and blocking until work or results may be there.

These are hints, kept outside the scripts so no script touches two Cluster slots:

* ``{prefix}:ready`` (SET): sessions that may have pending tasks. Submits and retries add
  their session after their script ran; claims drop sessions found drained, then re-check
  them, so a submit racing the drop is never lost. A hint lost with a broken connection is
  healed by a periodic rescan of every session's counters.
* ``{prefix}:work`` (STREAM, one entry kept): a token per submit or retry. A waiting worker
  reads the last entry ID *before* checking for work, then ``XREAD BLOCK``s past it, so a
  submit between the check and the block wakes it. Unlike a list popped with ``BLPOP``, a
  stream wakes every waiting worker, and nothing consumes the token.
* ``{prefix:session}:events`` (STREAM, one entry kept, written by the scripts in the same
  slot): entry ID ``<last_done_seq>-0``, so ``XREAD`` past ``<after>-0`` returns at once if
  the session already finished a task past ``after``, and otherwise blocks until it does.
"""

from __future__ import annotations

import time
from typing import Any

from htcgrid.backends.redis.link import Cmd, Eval, Link
from htcgrid.backends.redis.schema import SessionKeys, StoreKeys

#: How often a handle rebuilds the ready hint from every session's counters.
HEAL_INTERVAL_S = 30.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_score(reply: list[Any]) -> float:
    """The score in a one-member ``ZRANGE … WITHSCORES`` reply, flat or paired by redis-py."""
    pair = reply[0] if isinstance(reply[0], list | tuple) else reply
    return float(pair[1])


class Readiness:
    """The ready hint and the wake-up streams of one store."""

    def __init__(self, link: Link, keys: StoreKeys) -> None:
        self._link = link
        self._keys = keys
        self._next_heal = 0.0  # a handle's first claim heals the hint

    def session_ids(self) -> list[str]:
        """Every registered session id, oldest first."""
        members = self._link.run([Cmd("ZRANGE", self._keys.sessions, 0, -1)])[0]
        return [m.decode() for m in members]

    def mark(self, session_ids: list[str]) -> list[Eval | Cmd]:
        """Commands that mark sessions ready and wake waiting workers; send them in the
        same pipeline as, and after, the script that made the work."""
        return [
            Cmd("SADD", self._keys.ready, *session_ids),
            Cmd("XADD", self._keys.work, "MAXLEN", 1, "*", "n", 1),
        ]

    def ready(self) -> list[str]:
        """Sessions that may have pending tasks (healing the hint when it is due)."""
        if time.monotonic() >= self._next_heal:
            self._next_heal = time.monotonic() + HEAL_INTERVAL_S
            self._add_pending(self.session_ids())
        return self._ready_ids()

    def drop(self, session_ids: list[str]) -> None:
        """Take drained sessions out of the hint, then put back any that got tasks meanwhile
        (their submit marks them after its script ran, so one of us sees the other)."""
        self._link.run([Cmd("SREM", self._keys.ready, *session_ids)])
        self._add_pending(session_ids)

    def wait_for_work(self, deadline: float) -> None:
        """Block until a ready session has claimable tasks, a token arrives, the earliest
        delayed retry is due, or ``deadline`` (monotonic) passes."""
        # the stream's last ID is read first (the server runs a pipeline in order), so a
        # submit after the ready sessions are checked is not missed
        last, ready = self._link.run(
            [
                Cmd("XREVRANGE", self._keys.work, "+", "-", "COUNT", 1),
                Cmd("SMEMBERS", self._keys.ready),
            ]
        )
        last_id = last[0][0] if last else b"0-0"
        calls: list[Eval | Cmd] = []
        for session_id in [_text(s) for s in ready]:
            k = self._keys.session(session_id)
            calls += [Cmd("ZCARD", k.pending), Cmd("ZRANGE", k.delayed, 0, 0, "WITHSCORES")]
        replies = self._link.run(calls)
        if any(replies[0::2]):
            return
        next_due = [_first_score(first) for first in replies[1::2] if first]
        if next_due:
            deadline = min(deadline, time.monotonic() + max(0.0, min(next_due) - time.time()))
        self._block(self._keys.work, last_id, deadline)

    def wait_for_finished(self, k: SessionKeys, after: int, deadline: float) -> None:
        """Block until the session finished a task past ``after``, or ``deadline`` passes."""
        if self._link.run([Cmd("EXISTS", k.meta)])[0]:  # a missing session returns at once
            self._block(k.events, f"{max(0, after)}-0", deadline)

    def _ready_ids(self) -> list[str]:
        return [_text(s) for s in self._link.run([Cmd("SMEMBERS", self._keys.ready)])[0]]

    def _add_pending(self, session_ids: list[str]) -> None:
        """Mark ready those of ``session_ids`` that have pending tasks."""
        calls = [Cmd("HGET", self._keys.session(s).meta, "n_pending") for s in session_ids]
        counts = self._link.run(calls)
        ready = [s for s, n in zip(session_ids, counts, strict=True) if n and int(n) > 0]
        if ready:
            self._link.run([Cmd("SADD", self._keys.ready, *ready)])

    def _block(self, stream: str, after_id: bytes | str, deadline: float) -> None:
        """Block until ``stream`` has an entry past ``after_id`` or ``deadline`` passed, in
        steps short enough not to trip the connection's socket timeout."""
        step_s = self._link.block_step_s
        while (left := deadline - time.monotonic()) > 0:
            wait_s = left if step_s is None else min(left, step_s)
            block_ms = max(1, int(wait_s * 1000))
            read = Cmd("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", stream, after_id)
            if self._link.run([read])[0]:
                return
