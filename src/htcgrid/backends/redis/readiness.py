"""Which sessions may have work, and blocking until work or results may be there.

These are hints, kept outside the scripts so no script touches two Cluster slots:

* ``{prefix}:ready`` (SET): sessions that may have pending tasks. Submits and retries add
  their session after their script ran; claims drop sessions found drained, then re-check
  them, so a submit racing the drop is never lost. A hint lost with a broken connection is
  healed by a periodic rescan of every session's counters.
* ``{prefix}:wake`` (LIST, at most ``WAKE_TOKENS`` kept): tokens popped by waiting workers
  with ``BLPOP``, one per new task up to ``WAKE_TOKENS`` per submit or batch of retries. A
  token pushed while nobody waits stays in the list, so a submit between a worker's empty
  claim and its block is not missed. A token wakes **one** waiter: a submit of one task does
  not wake every idle worker of the grid to race for it (on a small machine the losers'
  round trips slow the winner), while a large submit wakes up to ``WAKE_TOKENS`` at once;
  further idle workers join at the end of their wait (``idle_wait_s``).
* ``{prefix:session}:events`` (STREAM, one entry kept, written by the scripts in the same
  slot): entry ID ``<last_done_seq>-0``, so ``XREAD`` past ``<after>-0`` returns at once if
  the session already finished a task past ``after``, and otherwise blocks until it does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from htcgrid.backends.redis.link import Cmd, Eval, Link
from htcgrid.backends.redis.schema import SessionKeys, StoreKeys

#: How often a handle rebuilds the ready hint from every session's counters.
HEAL_INTERVAL_S = 30.0

#: Most wake tokens one submit pushes, and the list keeps: how many idle workers a large
#: submit wakes at once. Tokens left when nobody waits cost a later waiter one empty claim.
WAKE_TOKENS = 8

#: How long the ready set read along with a wake-up stands in for a fresh read.
_FRESH_S = 0.01

#: Most sessions a handle remembers to exist (the memory is then forgotten, not trimmed).
_MAX_KNOWN = 1024


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Readiness:
    """The ready hint and the wake-up streams of one store."""

    def __init__(self, link: Link, keys: StoreKeys) -> None:
        self._link = link
        self._keys = keys
        self._next_heal = 0.0  # a handle's first claim heals the hint
        self._known: set[str] = set()  # sessions' meta keys seen to exist
        # when the last wake-up came, and the ready set read with it
        self._woke_with: tuple[float, list[str]] | None = None

    def session_ids(self) -> list[str]:
        """Every registered session id, oldest first."""
        members = self._link.run([Cmd("ZRANGE", self._keys.sessions, 0, -1)])[0]
        return [m.decode() for m in members]

    def mark(self, session_ids: list[str], n_tasks: int) -> list[Eval | Cmd]:
        """Commands that mark sessions ready and wake a waiting worker per task (at most
        WAKE_TOKENS); send them in the same pipeline as, and after, the script that made the
        ``n_tasks`` claimable. They go in the same round trip: nothing is sent between a
        store call and its answer to the caller."""
        tokens = [1] * max(1, min(n_tasks, WAKE_TOKENS))
        return [
            Cmd("SADD", self._keys.ready, *session_ids),
            Cmd("LPUSH", self._keys.wake, *tokens),
            Cmd("LTRIM", self._keys.wake, 0, WAKE_TOKENS - 1),
        ]

    def ready(self) -> list[str]:
        """Sessions that may have pending tasks (healing the hint when it is due). Right
        after a wake-up, the set as read in the wake-up's round trip."""
        woke_with, self._woke_with = self._woke_with, None
        if time.monotonic() >= self._next_heal:
            self._next_heal = time.monotonic() + HEAL_INTERVAL_S
            self._add_pending(self.session_ids())
        elif woke_with is not None and time.monotonic() - woke_with[0] < _FRESH_S:
            return woke_with[1]
        return self._ready_ids()

    def drop(self, seen: dict[str, int]) -> bool:
        """Take drained sessions out of the hint, then put back any that have tasks (their
        submit marks them after its script ran, so one of us sees the other). ``seen``: each
        session's pending count as the caller's claim left it. True if one got tasks since:
        the caller must claim again, since a worker woken for them may have read the hint
        while they were out of it, and gone back to sleep."""
        self._link.run([Cmd("SREM", self._keys.ready, *seen)])
        counts = self._add_pending(list(seen))
        return any(n > seen[s] for s, n in counts.items())

    def wait_for_work(self, deadline: float, next_due: float | None) -> None:
        """Block until a wake token arrives, the earliest delayed retry is due (``next_due``,
        wall clock, as the caller's last empty claim saw it), or ``deadline`` (monotonic)
        passes.

        No check for work comes first: the caller has just claimed and found none, and a
        submit since then left its token in the list."""
        if next_due is not None:
            deadline = min(deadline, time.monotonic() + max(0.0, next_due - time.time()))
        for wait_s in self._steps(deadline):
            # BLPOP takes seconds as a float (Redis >= 6); 1 ms is its finest useful grain;
            # the ready set is read as soon as it returns, for the claim that follows
            pop = Cmd("BLPOP", self._keys.wake, max(0.001, round(wait_s, 3)))
            token, ready = self._link.run([pop, Cmd("SMEMBERS", self._keys.ready)])
            if token:
                self._woke_with = (time.monotonic(), [_text(s) for s in ready])
                return

    def forget(self, k: SessionKeys) -> None:
        """Forget that the session exists (it was deleted through this handle)."""
        self._known.discard(k.meta)

    def wait_for_finished(self, k: SessionKeys, after: int, deadline: float, then: Eval) -> Any:
        """Block until the session finished a task past ``after``, or ``deadline`` passes;
        the reply of ``then``, sent in the same pipeline right behind the blocking read (the
        server runs it when the read returns: the fetch of what finished costs no extra round
        trip), or None if ``then`` was not sent: the deadline had passed, or the session,
        not seen by this handle before, does not exist (that returns at once)."""
        if k.meta not in self._known:
            if not self._link.run([Cmd("EXISTS", k.meta)])[0]:
                return None
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known.add(k.meta)
        after_id = f"{max(0, after)}-0"
        reply = None
        for wait_s in self._steps(deadline):
            block_ms = max(1, int(wait_s * 1000))
            read = Cmd("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", k.events, after_id)
            event, reply = self._link.run([read, then])
            if event:
                break
        return reply

    def _steps(self, deadline: float) -> Iterator[float]:
        """Seconds to block for, again and again until ``deadline`` (monotonic) passes, in
        steps short enough not to trip the connection's socket timeout."""
        step_s = self._link.block_step_s
        while (left := deadline - time.monotonic()) > 0:
            yield left if step_s is None else min(left, step_s)

    def _ready_ids(self) -> list[str]:
        return [_text(s) for s in self._link.run([Cmd("SMEMBERS", self._keys.ready)])[0]]

    def _add_pending(self, session_ids: list[str]) -> dict[str, int]:
        """Mark ready those of ``session_ids`` that have pending tasks; their counts."""
        calls = [Cmd("HGET", self._keys.session(s).meta, "n_pending") for s in session_ids]
        replies = self._link.run(calls)
        counts = {s: int(n or 0) for s, n in zip(session_ids, replies, strict=True)}
        ready = [s for s, n in counts.items() if n > 0]
        if ready:
            self._link.run([Cmd("SADD", self._keys.ready, *ready)])
        return counts
