"""W6, churn: a session of short tasks while one local worker process is SIGKILLed every
few seconds and restarted by the embedded grid's supervisor.

What it shows is recovery, not speed: every task must still succeed exactly once, and each
kill costs the time the grid takes to notice. That time is measured per kill from the store
itself: right after the SIGKILL, the running attempts whose lease names the killed worker
(its id carries its process id) are read from the store; the kill counts as *detected* when
every one of them is no longer running under that attempt (the reaper made it pending
again, or another worker already claimed it). It is bounded by the lease TTL (a heartbeat
renews every TTL/3, so a lease outlives its worker by 2/3 to all of the TTL) plus the
reaper's period, plus this module's polling (every 50 ms).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from htcgrid.backends.base import Backend
from htcgrid.benchmark.runs import Run
from htcgrid.core.model import TaskRecord
from htcgrid.core.states import TaskState
from htcgrid.embedded import EmbeddedGrid
from htcgrid.workloads import expected_mock_result, mock_computation

#: W6's defaults: tasks, each sleeping this long, a kill this often, a short lease.
TASKS = 10_000
TASK_SLEEP_MS = 5.0
KILL_EVERY_S = 2.0
LEASE_TTL_S = 2.0
REAPER_PERIOD_S = 0.5
#: Attempts a task may take: a task can be held by two killed workers in a row.
MAX_ATTEMPTS = 5
#: Each gap between kills is KILL_EVERY_S (or the caller's) times a factor drawn uniformly
#: from this range, from a fixed seed. Evenly spaced kills fall in step with the reaper's
#: period (it divides them): the reaper hands a dead worker's attempts back, a worker takes
#: them all in one claim, and the next kill lands a few tens of ms later, every time, on
#: the worker that took them -- the same attempts die again until max_attempts is used up.
#: Real failures come at no fixed phase, so neither do these.
KILL_JITTER = (0.5, 1.5)
KILL_SEED = 6
#: How often the store is asked whether a killed worker's attempts were taken back.
POLL_S = 0.05
#: Longest wait for the last kill's detection after the tasks are done.
SETTLE_S = 30.0
#: Running leases read at once right after a kill (more than any worker holds).
LEASE_SCAN_LIMIT = 100_000


@dataclass(slots=True)
class Kill:
    """One SIGKILL: when (seconds into the run), whom, which attempts it held."""

    at_s: float
    pid: int
    held: dict[str, int] = field(default_factory=dict)  # task id -> attempt it was running
    detected_s: float | None = None  # seconds from the kill until all ``held`` were retaken


def worker_pid(worker_id: str) -> int | None:
    """The process id in a default worker id ``<host>-<pid>-<hex>``, or None."""
    parts = worker_id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


class Churn:
    """SIGKILLs the local worker processes of ``embedded`` in turn, one every ``every_s`` on
    average (see KILL_JITTER), and measures per kill how long the store takes to release
    its attempts."""

    def __init__(self, embedded: EmbeddedGrid, backend: Backend, every_s: float) -> None:
        self.embedded = embedded
        self.backend = backend
        self.every_s = every_s
        self.kills: list[Kill] = []
        self._next = 0  # which worker slot dies next
        self._rng = random.Random(KILL_SEED)
        self._started = 0.0
        self._stop_killing = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcgrid-churn", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Churn:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop killing; wait (bounded) until the last kills are detected."""
        self._stop_killing.set()
        deadline = time.monotonic() + SETTLE_S
        while self._pending() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(POLL_S)
        self._stop.set()
        self._thread.join(timeout=10)

    def _pending(self) -> list[Kill]:
        return [k for k in self.kills if k.held and k.detected_s is None]

    def _run(self) -> None:
        next_kill = self._started + self._gap()
        try:
            while not self._stop.wait(POLL_S):
                if not self._stop_killing.is_set() and time.monotonic() >= next_kill:
                    self._kill_one()
                    next_kill += self._gap()
                self._detect()
        except BaseException as exc:  # reported by the workload, never lost in a thread
            self.error = exc

    def _gap(self) -> float:
        return self.every_s * self._rng.uniform(*KILL_JITTER)

    def _kill_one(self) -> None:
        pids = self.embedded.pids
        for _ in range(len(pids)):
            slot = self._next % len(pids)
            self._next += 1
            pid = pids[slot]
            if _alive(pid):
                break
        else:
            return  # every worker is still being restarted: skip this round
        os.kill(pid, signal.SIGKILL)
        kill = Kill(at_s=time.monotonic() - self._started, pid=pid)
        # the dead worker can no longer complete or renew: what the store shows it running
        # now is exactly what the reaper has to take back
        for lease in self.backend.expired(time.time() + 1e9, LEASE_SCAN_LIMIT):
            if worker_pid(lease.worker_id) == pid:
                kill.held[lease.task_id] = lease.attempt
        self.kills.append(kill)

    def _detect(self) -> None:
        for kill in self._pending():
            ids = list(kill.held)
            records = self.backend.tasks(ids)
            if all(_released(r, kill.held[r.task_id]) for r in records):
                kill.detected_s = time.monotonic() - self._started - kill.at_s

    def summary(self) -> dict[str, Any]:
        seen = [k.detected_s for k in self.kills if k.detected_s is not None]
        detect: dict[str, Any] = {}
        if seen:
            detect = {
                "min": round(min(seen), 3),
                "median": round(statistics.median(seen), 3),
                "max": round(max(seen), 3),
            }
        return {
            "kills": len(self.kills),
            "kills_holding_tasks": sum(1 for k in self.kills if k.held),
            "undetected_kills": len(self._pending()),
            "detect_s": detect,
            "detect_s_each": [
                None if k.detected_s is None else round(k.detected_s, 3) for k in self.kills
            ],
            "attempts_taken_back_each": [len(k.held) for k in self.kills],
            "kill_at_s": [round(k.at_s, 2) for k in self.kills],
        }


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _released(record: TaskRecord, attempt: int) -> bool:
    """True once the attempt a killed worker held no longer holds the task."""
    return record.state is not TaskState.RUNNING or record.attempt != attempt


def w6_churn(
    run: Run, embedded: EmbeddedGrid, backend: Backend, kill_every_s: float = KILL_EVERY_S
) -> dict[str, Any]:
    """The churn workload on ``embedded`` (whose store ``backend`` is opened separately, for
    the lease reads): :data:`TASKS` mock-computation tasks sleeping :data:`TASK_SLEEP_MS`
    each, all submitted at once, one worker killed every ``kill_every_s``.

    The tasks are mock computations rather than bare sleeps because their results carry a
    checksum of their input: a result that reached the wrong task would be caught.
    """
    n = run.n(TASKS)
    inputs = [{"index": i, "sleep_ms": TASK_SLEEP_MS} for i in range(n)]
    quiet = [logging.getLogger(name) for name in ("htcgrid.reaper", "htcgrid.embedded")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # a warning per reaped attempt and restart is the point here, not news
        lg.setLevel(logging.ERROR)
    checked: set[int] = set()  # tasks whose result the client got and found right
    wrong = failed = 0
    try:
        with run.session("bench-W6", max_attempts=MAX_ATTEMPTS) as session:
            start = time.perf_counter()
            deadline = time.monotonic() + run.timeout_s
            with Churn(embedded, backend, kill_every_s) as churn:
                futures = session.submit_many(mock_computation, inputs)
                for i, future in enumerate(futures):
                    try:
                        value = future.result(timeout=max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        if not future.done():
                            raise TimeoutError(
                                f"W6 unfinished after {run.timeout_s} s: {session.counts()}"
                            ) from None
                        failed += 1
                        continue
                    except Exception:  # the task failed: its exception, raised here
                        failed += 1
                        continue
                    if value == expected_mock_result(inputs[i]):
                        checked.add(i)
                    else:
                        wrong += 1
                    run.done += 1
            seconds = time.perf_counter() - start
            counts = session.counts()
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    if churn.error is not None:
        raise RuntimeError(f"W6: the churn thread failed: {churn.error!r}") from churn.error
    ids = [f.task_id for f in futures]
    records = [r for i in range(0, n, 1000) for r in backend.tasks(ids[i : i + 1000])]
    attempts = [r.attempt for r in records]
    accepted = sum(
        1 for i, r in enumerate(records) if r.state is TaskState.SUCCEEDED and i in checked
    )
    return {
        "n": n,
        "seconds": seconds,
        "all_succeeded": accepted == n and counts.succeeded == n,
        "accepted_completions": accepted,
        "wrong_results": wrong,
        "failed_tasks": failed,
        "attempts_total": sum(attempts),
        "retried_tasks": sum(1 for a in attempts if a > 1),
        "most_attempts": max(attempts, default=0),
        "lost_attempts": sum(r.n_lost for r in records),
        "restarts": embedded.restarts,
        **churn.summary(),
        "kill_every_s": kill_every_s,
        "lease_ttl_s": embedded.lease_ttl_s,
        "reaper_period_s": embedded.reaper_period_s,
        "max_attempts": MAX_ATTEMPTS,
        "task_sleep_ms": TASK_SLEEP_MS,
    }
