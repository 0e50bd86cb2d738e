"""The benchmark workloads, each one timed repetition against an open grid.

    W1  20,000 no-op tasks on ~100-byte inputs            control-plane throughput
    W2  300 sequential single tasks after 20 warm-ups    latency of one task, idle grid
    W3  2,000 tasks of 10 ms pure-Python CPU              efficiency under real work
    W4  2,000 tasks of 1 MB in, 1 MB out                  the data path (blobs)
    W5  1,000,000 no-op tasks in one session              memory and throughput at scale
    W6  (see :mod:`htcgrid.benchmark.churn`)              recovery from killed workers

The clock runs from the first submit call to the moment the client holds, and has checked,
every result: a benchmark that does not check its results measures nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from typing import Any, Protocol

import htcgrid
from htcgrid.client.session import SUBMIT_BATCH
from htcgrid.worker.pacing import QUEUED_WORK_S, RECENT_S
from htcgrid.workloads import MB, burn_cpu_ms, echo_bytes, noop

#: W5: tasks kept in flight, and a latency kept for every this many tasks.
W5_WINDOW = 50_000
W5_LATENCY_EVERY = 100
#: Seconds between W5's progress lines on stderr.
PROGRESS_EVERY_S = 10.0


def w1_input(i: int) -> bytes:
    """The ~100-byte input of no-op task ``i``; a result equal to it proves which task ran."""
    return f"task {i:08d} ".encode().ljust(100, b".")


class Run:
    """One repetition of one workload against an open grid.

    ``scale`` multiplies every task count (for smoke runs); ``timeout_s`` bounds how long the
    client waits for the results before it gives up with the session's counts.
    """

    def __init__(self, grid: htcgrid.Grid, codec: str, scale: float, timeout_s: float) -> None:
        self.grid = grid
        self.codec = codec
        self.scale = scale
        self.timeout_s = timeout_s
        #: sessions this run opened, so a run on a store that outlives it can delete them
        self.session_ids: list[str] = []
        #: tasks whose result the client holds and has checked, for progress and samplers
        self.done = 0

    def n(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def session(self, name: str, **options: Any) -> htcgrid.Session:
        session = self.grid.session(codec=self.codec, name=name, **options)
        self.session_ids.append(session.session_id)
        return session

    def w1_noop(self) -> dict[str, Any]:
        """20,000 tasks returning their ~100-byte input."""
        inputs = [w1_input(i) for i in range(self.n(20_000))]

        def check(i: int, value: Any) -> None:
            if value != inputs[i]:
                raise AssertionError(f"W1 task {i}: got {value!r}")

        seconds, lat = self.drive(noop, inputs, check)
        return {"n": len(inputs), "seconds": seconds, **percentiles(lat)}

    def w2_latency(self) -> dict[str, Any]:
        """300 sequential single tasks (submit one, wait for it), after 20 warm-up ones."""
        payload = b"x" * 100
        with self.session("bench-W2") as session:
            for _ in range(20):
                session.submit(noop, payload).result(timeout=self.timeout_s)
            lat: list[float] = []
            n = self.n(300)
            start = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                value = session.submit(noop, payload).result(timeout=self.timeout_s)
                lat.append(time.perf_counter() - t0)
                if value != payload:
                    raise AssertionError(f"W2: got {value!r}")
                self.done += 1
            seconds = time.perf_counter() - start
        return {"n": n, "seconds": seconds, **percentiles(lat)}

    def w3_cpu(self) -> dict[str, Any]:
        """2,000 tasks that each busy-loop 10 ms of CPU."""
        n = self.n(2000)

        def check(i: int, value: Any) -> None:
            if value != 10.0:
                raise AssertionError(f"W3 task {i}: got {value!r}")

        seconds, lat = self.drive(burn_cpu_ms, (10.0 for _ in range(n)), check)
        return {"n": n, "seconds": seconds, **percentiles(lat)}

    def w4_payload(self) -> dict[str, Any]:
        """2,000 tasks each taking 1 MB of bytes and returning 1 MB (reversed)."""
        n = self.n(2000)
        base = os.urandom(MB)
        head = base[-8:][::-1]  # what every reversed result starts with

        def inputs() -> Iterator[bytes]:
            for i in range(n):  # fresh bytes per task, made lazily: 2 GB never sit in memory
                yield i.to_bytes(8, "big") + base[8:]

        def check(i: int, value: Any) -> None:
            ok = isinstance(value, bytes) and len(value) == MB
            if not (ok and value[:8] == head and value[-8:] == i.to_bytes(8, "big")[::-1]):
                raise AssertionError(f"W4 task {i}: wrong {len(value)}-byte result")

        # a bounded window of 1 MB tasks in flight: submitting all 2,000 first would write
        # 2 GB of input blobs before the first task could start
        seconds, lat = self.drive(echo_bytes, inputs(), check, batch=16, window=128)
        return {"n": n, "seconds": seconds, "mb_per_s": 2 * n / seconds, **percentiles(lat)}

    def w5_million(self) -> dict[str, Any]:
        """1,000,000 no-op tasks in one session, submitted in batches while the workers run,
        at most :data:`W5_WINDOW` in flight; every result checked and dropped, the latency
        of every :data:`W5_LATENCY_EVERY`-th task kept, so the client's own memory is flat
        and what grows (if anything) is the grid's."""
        n = self.n(1_000_000)

        def check(i: int, value: Any) -> None:
            if value != w1_input(i):
                raise AssertionError(f"W5 task {i}: got {value!r}")

        seconds, lat = self.drive(
            noop,
            (w1_input(i) for i in range(n)),
            check,
            window=W5_WINDOW,
            latency_every=W5_LATENCY_EVERY,
            progress_label="W5",
            total=n,
        )
        return {
            "n": n,
            "seconds": seconds,
            "window": W5_WINDOW,
            "latency_sample_every": W5_LATENCY_EVERY,
            **percentiles(lat),
        }

    def drive(
        self,
        fn: Callable[..., Any],
        inputs: Iterable[Any],
        check: Callable[[int, Any], None],
        *,
        batch: int = SUBMIT_BATCH,
        window: int | None = None,
        latency_every: int = 1,
        progress_label: str = "",
        total: int = 0,
    ) -> tuple[float, list[float]]:
        """:func:`drive` ``fn`` over ``inputs`` in a session of this grid. With a
        ``progress_label``, a line on stderr every :data:`PROGRESS_EVERY_S` says how far it
        got."""
        with self.session("bench") as session:
            start = time.perf_counter()
            next_progress = start + PROGRESS_EVERY_S

            def collected() -> None:
                nonlocal next_progress
                self.done += 1
                if progress_label and time.perf_counter() >= next_progress:
                    now = time.perf_counter()
                    next_progress = now + PROGRESS_EVERY_S
                    rate = self.done / (now - start)
                    print(
                        f"{progress_label}: {self.done:,} / {total:,} tasks, {rate:,.0f} tasks/s",
                        file=sys.stderr,
                        flush=True,
                    )

            try:
                return drive(
                    partial(session.submit_many, fn),
                    inputs,
                    check,
                    batch=batch,
                    window=window,
                    latency_every=latency_every,
                    timeout_s=self.timeout_s,
                    on_result=collected,
                )
            except TimeoutError:
                counts = session.counts()
                raise TimeoutError(f"unfinished after {self.timeout_s} s: {counts}") from None


class FutureLike(Protocol):
    """What :func:`drive` needs of a task's future: the grid's, or another runner's."""

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...

    def result(self, timeout: float | None = None) -> Any: ...


def drive(
    submit: Callable[[list[Any]], Iterable[FutureLike]],
    inputs: Iterable[Any],
    check: Callable[[int, Any], None],
    *,
    batch: int = SUBMIT_BATCH,
    window: int | None = None,
    latency_every: int = 1,
    timeout_s: float = 600.0,
    on_result: Callable[[], None] | None = None,
) -> tuple[float, list[float]]:
    """Submit ``inputs`` in batches of ``batch`` (``submit`` takes a list, returns a future
    per input), keeping at most ``window`` tasks in flight (all of them when None; refilled
    a whole batch at a time), and check every result in input order, calling ``on_result``
    after each; return the wall seconds from the first submit to the last result, and the
    submit-to-result latency of every ``latency_every``-th task. ``bench/peers.py`` drives
    other task runners with it, so that they are driven exactly as the grid is."""
    limit = window or sys.maxsize
    latencies: list[float] = []
    in_flight: deque[tuple[int, FutureLike]] = deque()
    it = iter(inputs)
    index = 0
    deadline = time.monotonic() + timeout_s
    start = time.perf_counter()
    is_exhausted = False
    while True:
        # refill in whole batches: topping the window up by one task per result would make
        # every submit a round trip for a single task
        while not is_exhausted and limit - len(in_flight) >= min(batch, limit):
            values = list(islice(it, min(batch, limit)))
            if not values:
                is_exhausted = True
                break
            t0 = time.perf_counter()
            for future in submit(values):
                if index % latency_every == 0:
                    future.add_done_callback(partial(record_latency, latencies, t0))
                in_flight.append((index, future))
                index += 1
        if not in_flight:
            break
        i, future = in_flight.popleft()
        check(i, future.result(timeout=max(0.0, deadline - time.monotonic())))
        if on_result is not None:
            on_result()
    return time.perf_counter() - start, latencies


def record_latency(latencies: list[float], t0: float, _future: object) -> None:
    latencies.append(time.perf_counter() - t0)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds (nearest rank)."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))] * 1000

    return {"p50_ms": rank(50), "p99_ms": rank(99)}


def executor_pid(sleep_s: object) -> int:
    """Warm-up task: which executor process ran it (after sleeping ``sleep_s``, if a number:
    slow tasks are spread over every worker instead of claimed by the first in one batch)."""
    if isinstance(sleep_s, float):
        time.sleep(sleep_s)
    return os.getpid()


def warm_up(grid: htcgrid.Grid, executors: int | None, timeout_s: float = 60.0) -> tuple[int, int]:
    """Run small rounds of instant tasks until every executor process has run one; return
    (rounds, executors seen). With ``executors`` None (a grid whose workers are not ours, so
    their number is unknown), stop after three rounds in a row show no new process.

    The warm-up tasks are instant, and the clock starts only once they have left the window
    (:data:`~htcgrid.worker.pacing.RECENT_S`) in which workers size their prefetch by the
    slowest handler they claimed: a slow warm-up would throttle the timed run's first second.
    """
    seen: set[int] = set()
    rounds = quiet = 0
    per_round = 2 * executors if executors else 8
    deadline = time.monotonic() + timeout_s
    with grid.session(name="bench-warm-up") as session:
        while time.monotonic() < deadline:
            if executors is not None and len(seen) >= executors:
                break
            if executors is None and quiet >= 3:
                break
            before = len(seen)
            # workers whose number is unknown get tasks of a fifth of the work a worker
            # queues per executor: it takes only five of those, so every worker gets some;
            # a known number gets instant ones
            inputs = range(per_round) if executors else [QUEUED_WORK_S / 5] * per_round
            futures = session.submit_many(executor_pid, inputs)
            seen.update(f.result(timeout=timeout_s) for f in futures)
            quiet = quiet + 1 if len(seen) == before else 0
            rounds += 1
            time.sleep(0.05)
        warm_up_session = session.session_id
    with contextlib.suppress(htcgrid.GridError):  # if not allowed, a few finished tasks stay
        grid.delete_session(warm_up_session)
    if executors is not None and len(seen) < executors:
        print(f"warning: only {len(seen)} of {executors} executors ran warm-up", file=sys.stderr)
    # the warm-up handler's first call (its import) counts as a slow task: let it leave the
    # window in which workers size their prefetch by it, or it throttles the timed run
    time.sleep(RECENT_S + 0.2)
    return rounds, len(seen)
