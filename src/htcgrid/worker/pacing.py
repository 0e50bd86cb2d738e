"""How many attempts a worker holds: enough queued work to hide a claim round trip, no more.

Durations are learnt per handler (an exponential moving average of what executors report).
The queue depth follows the slowest handler the worker holds attempts of (or claimed in the
last RECENT_S), so a session of 10 s tasks is never hoarded in a batch sized for no-ops next
to it, while a worker that only sees no-ops -- including right after a slow session ended --
takes them in batches of ``max_batch``. A handler not yet measured counts as slow.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Seconds of queued work to keep per executor: enough to hide a claim round trip even when
#: every core is busy and each hop (agent, store, agent) waits for a scheduler slice. More
#: halves the claims (PostgreSQL's W3 gained a point at 0.2 s) but puts more attempts at
#: risk when a worker dies, and leaves one worker idle longer at a session's end.
QUEUED_WORK_S = 0.1
#: A busy worker holds finished attempts for up to this many task durations, so that one
#: store call completes several of them...
GROUP_TASKS = 20
#: ...but never longer than this: the price, in latency, of completing in groups. It is
#: paid only while other attempts run here: the last one to finish is completed at once.
MAX_COMPLETE_DELAY_S = 0.2
#: A handler counts for the queue depth for this long after it was last claimed, even when
#: none of its attempts is held any more (its next task may be one claim away).
RECENT_S = 1.0
_ALPHA = 0.2
_MAX_HANDLERS = 1024


class Pacer:
    """Per-handler task durations, and the per-executor queue depth they call for."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._avg_s: dict[str, float] = {}
        self._claimed_at: dict[str, float] = {}

    def claimed(self, handler: str, now: float) -> None:
        """Note that an attempt of ``handler`` was claimed at ``now`` (monotonic seconds)."""
        self._claimed_at[handler] = now

    def observe(self, handler: str, duration_s: float) -> None:
        """Learn from one attempt's measured run time."""
        avg = self._avg_s.get(handler)
        if avg is None:
            if len(self._avg_s) >= _MAX_HANDLERS:
                self._avg_s.clear()
            self._avg_s[handler] = duration_s
        else:
            self._avg_s[handler] = avg + _ALPHA * (duration_s - avg)

    def task_s(self, now: float, held: Iterable[str] = ()) -> float:
        """The duration to plan with: the slowest of the ``held`` handlers and of those
        claimed in the last RECENT_S."""
        recent = {h: t for h, t in self._claimed_at.items() if now - t < RECENT_S}
        if len(recent) != len(self._claimed_at):
            self._claimed_at = recent
        handlers = recent.keys() | set(held)
        if not handlers:
            return QUEUED_WORK_S
        return max(self._avg_s.get(h, QUEUED_WORK_S) for h in handlers)

    def complete_delay(self, now: float, held: Iterable[str] = ()) -> float:
        """How long a busy worker may hold finished attempts before completing them: about
        GROUP_TASKS task durations, capped at MAX_COMPLETE_DELAY_S. No-ops get ~0 (every
        loop turn gathers many outcomes anyway); 10 ms tasks are completed ~20 at a time."""
        return min(MAX_COMPLETE_DELAY_S, GROUP_TASKS * self.task_s(now, held))

    def depth(self, now: float, held: Iterable[str] = ()) -> int:
        """Attempts to queue per executor: ~QUEUED_WORK_S of work, between 1 and max_batch."""
        n = int(QUEUED_WORK_S / max(self.task_s(now, held), 1e-7))
        return max(1, min(self.max_batch, n))
