"""How many attempts a worker holds: enough queued work to make each claim worth its cost.

Durations are learnt per handler (an exponential moving average of what executors report).
The queue depth follows the slowest handler the worker holds attempts of (or claimed in the
last RECENT_S), so a session of 10 s tasks is never hoarded in a batch sized for no-ops next
to it, while a worker that only sees no-ops -- including right after a slow session ended --
takes them in batches of ``max_batch``. A handler not yet measured counts as slow. Inputs
the agent holds are bounded too (QUEUED_BYTES), so large payloads are not hoarded either.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Seconds of queued work to keep per executor. The agent claims when half of it is free,
#: and executors report outcomes about as often (see ``executor.HOLD_S``), so this sets how
#: often a busy worker wakes, claims and completes: every ~0.2 s. Each such cycle costs the
#: agent, the store and the client a millisecond or so of CPU taken from the executors
#: (caches are cold after each burst of user code), which at 0.1 s was 2-3 % of a 2-core
#: machine running 10 ms tasks (W3) and at 0.4 s is under 1 %. More would put more
#: attempts at risk when a worker dies, and make a higher-priority session wait longer
#: behind what is queued.
QUEUED_WORK_S = 0.4
#: Most input bytes to queue per executor: large payloads are held by the agent (and sent
#: to the executor) while queued, so their depth is bounded by memory rather than time.
QUEUED_BYTES = 32 * 1024 * 1024
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
        self._avg_bytes: dict[str, float] = {}
        self._claimed_at: dict[str, float] = {}

    def claimed(self, handler: str, now: float, size: int = 0) -> None:
        """Note that an attempt of ``handler`` with a ``size``-byte input the agent holds
        was claimed at ``now`` (monotonic seconds)."""
        self._claimed_at[handler] = now
        _learn(self._avg_bytes, handler, size)

    def observe(self, handler: str, duration_s: float) -> None:
        """Learn from one attempt's measured run time."""
        _learn(self._avg_s, handler, duration_s)

    def task_s(self, now: float, held: Iterable[str] = ()) -> float:
        """The duration to plan with: the slowest of the ``held`` handlers and of those
        claimed in the last RECENT_S."""
        return self._slowest(self._planned(now, held))

    def _slowest(self, handlers: set[str]) -> float:
        """The longest learnt duration of ``handlers`` (QUEUED_WORK_S for one not measured,
        or for none at all)."""
        return max((self._avg_s.get(h, QUEUED_WORK_S) for h in handlers), default=QUEUED_WORK_S)

    def _planned(self, now: float, held: Iterable[str]) -> set[str]:
        """The handlers to plan for: those ``held`` and those claimed in the last RECENT_S."""
        recent = {h: t for h, t in self._claimed_at.items() if now - t < RECENT_S}
        if len(recent) != len(self._claimed_at):
            self._claimed_at = recent
        return recent.keys() | set(held)

    def complete_delay(self, now: float, held: Iterable[str] = ()) -> float:
        """How long a busy worker may hold finished attempts before completing them: about
        GROUP_TASKS task durations, capped at MAX_COMPLETE_DELAY_S. No-ops get ~0 (every
        loop turn gathers many outcomes anyway); 10 ms tasks are completed ~20 at a time."""
        return min(MAX_COMPLETE_DELAY_S, GROUP_TASKS * self.task_s(now, held))

    def depth(self, now: float, held: Iterable[str] = ()) -> int:
        """Attempts to queue per executor: ~QUEUED_WORK_S of work and at most QUEUED_BYTES
        of inputs, between 1 and max_batch."""
        handlers = self._planned(now, held)
        n = int(QUEUED_WORK_S / max(self._slowest(handlers), 1e-7))
        size = max((self._avg_bytes.get(h, 0.0) for h in handlers), default=0.0)
        if size > 0:
            n = min(n, int(QUEUED_BYTES / size))
        return max(1, min(self.max_batch, n))


def _learn(averages: dict[str, float], handler: str, value: float) -> None:
    """Move ``handler``'s moving average towards ``value`` (its first value sets it); a
    table that has seen _MAX_HANDLERS handlers is forgotten rather than trimmed."""
    avg = averages.get(handler)
    if avg is None:
        if len(averages) >= _MAX_HANDLERS:
            averages.clear()
        averages[handler] = value
    else:
        averages[handler] = avg + _ALPHA * (value - avg)
