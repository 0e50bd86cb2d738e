"""Per-session counts stay exact through every kind of transition, in any interleaving."""

from __future__ import annotations

import random

from htcgrid.backends.base import Backend, LeaseKey
from htcgrid.core.model import Claim, FailureKind
from htcgrid.core.retry import decide_failure, lost_error

from .helpers import T0, assert_counts_exact, fail, new_tasks, open_session, succeed

SESSIONS = ("a", "b", "c")


class _Workload:
    """Random but seeded operations on three sessions, playing client, workers and reaper."""

    def __init__(self, backend: Backend, seed: int) -> None:
        self.backend = backend
        self.rng = random.Random(seed)
        self.now = T0
        self.ids: dict[str, list[str]] = {}
        self.running: list[Claim] = []
        for i, session_id in enumerate(SESSIONS):
            self.ids[session_id] = open_session(
                backend, session_id, n=20, priority=i % 2, max_attempts=2, retry_backoff_s=1.0
            )

    def step(self) -> None:
        self.now += self.rng.choice([0.0, 0.5, 3.0])
        ops = [self.submit, self.claim, self.complete, self.renew, self.reap]
        ops += [self.claim, self.complete, self.cancel_some, self.complete_stale]
        self.rng.choice(ops)()

    def submit(self) -> None:
        session_id = self.rng.choice(SESSIONS)
        if not self.backend.get_session(session_id).is_cancelled:
            n = self.rng.randint(0, 5)
            self.ids[session_id] += self.backend.submit(session_id, new_tasks(n), self.now)

    def claim(self) -> None:
        ttl = self.rng.choice([1.0, 10.0])
        worker_id = f"w{self.rng.randint(1, 3)}"
        self.running += self.backend.claim(worker_id, self.rng.randint(1, 8), ttl, self.now)

    def _take(self) -> list[Claim]:
        self.rng.shuffle(self.running)
        n = self.rng.randint(0, len(self.running))
        taken, self.running = self.running[:n], self.running[n:]
        return taken

    def complete(self) -> None:
        outcomes = []
        for c in self._take():
            kind = self.rng.choice([None, None, FailureKind.ERROR, FailureKind.TIMEOUT])
            outcomes.append(succeed(c) if kind is None else fail(c, kind, self.now))
        self.backend.complete(outcomes, self.now)

    def complete_stale(self) -> None:
        """Report attempts twice: the second report must change nothing."""
        taken = self._take()
        self.backend.complete([succeed(c) for c in taken], self.now)
        assert not any(self.backend.complete([succeed(c) for c in taken], self.now))

    def renew(self) -> None:
        keys = [LeaseKey(c.task_id, c.attempt) for c in self.running]
        self.backend.renew("w1", keys, 10.0, self.now)

    def reap(self) -> None:
        leases = self.backend.expired(self.now, self.rng.randint(1, 10))
        self.backend.expire([decide_failure(x, lost_error(x), self.now) for x in leases], self.now)

    def cancel_some(self) -> None:
        session_id = self.rng.choice(SESSIONS)
        if self.rng.random() < 0.1:
            self.backend.cancel(session_id, None, self.now)
        elif self.ids[session_id]:
            picked = self.rng.sample(self.ids[session_id], min(3, len(self.ids[session_id])))
            self.backend.cancel(session_id, picked, self.now)

    def check(self) -> None:
        for session_id, ids in self.ids.items():
            assert_counts_exact(self.backend, session_id, ids)
            stream = self.backend.finished(session_id, 0, 10_000)
            assert [r.done_seq for r in stream] == list(range(1, len(stream) + 1))
            assert len(stream) == self.backend.counts(session_id).finished


def test_counts_stay_exact_through_a_random_workload(backend: Backend) -> None:
    for seed in range(3):
        for session_id in SESSIONS:
            if any(s.session_id == session_id for s in backend.list_sessions()):
                backend.delete_session(session_id)
        workload = _Workload(backend, seed)
        for _ in range(150):
            workload.step()
            workload.check()


def test_counts_after_each_transition(backend: Backend) -> None:
    ids = open_session(backend, "s", n=8, max_attempts=2)
    assert_counts_exact(backend, "s", ids)
    claims = backend.claim("w", 6, 10.0, T0)
    assert_counts_exact(backend, "s", ids)
    backend.complete([succeed(claims[0])], T0)  # running -> succeeded
    assert_counts_exact(backend, "s", ids)
    backend.complete([fail(claims[1])], T0)  # running -> pending
    assert_counts_exact(backend, "s", ids)
    [retry] = [c for c in backend.claim("w", 8, 10.0, T0) if c.task_id == claims[1].task_id]
    backend.complete([fail(retry)], T0)  # running -> failed
    assert_counts_exact(backend, "s", ids)
    backend.complete([succeed(claims[0])], T0)  # rejected: nothing moves
    assert_counts_exact(backend, "s", ids)
    backend.renew("w", [LeaseKey(claims[2].task_id, 1)], 100.0, T0)
    assert_counts_exact(backend, "s", ids)
    leases = backend.expired(T0 + 20, 100)
    backend.expire([decide_failure(x, lost_error(x), T0 + 20) for x in leases], T0 + 20)
    assert_counts_exact(backend, "s", ids)  # running -> pending, by the reaper
    backend.cancel("s", [claims[2].task_id, ids[7]], T0 + 21)  # running and pending -> cancelled
    assert_counts_exact(backend, "s", ids)
    backend.cancel("s", None, T0 + 22)
    assert_counts_exact(backend, "s", ids)
    assert backend.counts("s").total == 8
