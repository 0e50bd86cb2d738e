"""The executor pool: executor processes and the attempts queued on each, seen from the agent.

It sends ready attempts in whole batches (queue depth paced by :mod:`htcgrid.worker.pacing`),
takes in outcomes, and stops attempts that overran their timeout, lost their lease or took
their executor down -- killing and replacing that executor and re-sending its other queued
attempts. It never talks to the store: what finished is handed back with :meth:`take_finished`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import get_context

from htcgrid.backends.blobs import output_blob_key
from htcgrid.core.model import Claim, ErrorInfo, FailureKind
from htcgrid.worker.executor import Attempt, ExecutorBlobs, ExecutorProcess
from htcgrid.worker.pacing import Pacer
from htcgrid.worker.protocol import AttemptKey, Batch, Outcome, Skip, encoder, outcome_decoder

log = logging.getLogger(__name__)

#: A lost attempt still at the head of its executor after this long is killed.
LOST_GRACE_S = 0.2
#: An executor that has not said it is ready after this long is replaced.
STARTUP_TIMEOUT_S = 60.0


@dataclass(slots=True)
class WorkerStats:
    """What a worker did, for logs, tests and benchmarks."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that ended in an error, timeout, crash or refusal
    rejected: int = 0  # completions the store refused (cancelled or reaped meanwhile)
    lost: int = 0  # attempts stopped because their lease was lost
    timeouts: int = 0
    crashes: int = 0  # executors that died under an attempt


#: An attempt that ended: the executor's outcome, or the error the pool recorded for it.
Finished = tuple[Claim, Outcome | ErrorInfo]


class ExecutorPool:
    """``size`` executor processes fed from one queue of ready attempts."""

    def __init__(
        self,
        worker_id: str,
        size: int,
        max_memory_mb: int | None,
        max_batch: int,
        stats: WorkerStats,
    ) -> None:
        self.worker_id = worker_id
        self.size = size
        self.max_memory_mb = max_memory_mb
        self.max_batch = max_batch
        self.stats = stats
        #: the blob store executors read large inputs from and write large results to, if
        #: they can reach it (set it before :meth:`start`)
        self.blobs: ExecutorBlobs | None = None
        self.ready: deque[Attempt] = deque()  # claimed, not yet sent to an executor
        self._ctx = get_context("spawn")
        self._executors: list[ExecutorProcess] = []
        self._finished: list[Finished] = []
        self._lost: dict[AttemptKey, float] = {}  # lost attempts still queued -> when
        self._dropped_results: list[str] = []  # result blobs of lost attempts, unwanted
        self._pacer = Pacer(max_batch)
        self._is_closing = False
        self._poller = select.poll()
        self._poll_key: tuple[object, ...] = ()
        self._by_fd: dict[int, ExecutorProcess] = {}

    def start(self) -> None:
        self._executors = [self._spawn(i) for i in range(self.size)]

    def close(self, graceful: bool) -> None:
        """Stop every executor: let idle ones exit (``graceful``) or kill them."""
        self._is_closing = True
        for ex in self._executors:
            if graceful:
                ex.close(timeout_s=5.0)
            else:
                ex.kill()
        self._executors = []

    @property
    def held(self) -> int:
        """Attempts claimed and not yet finished (ready or queued on an executor)."""
        return len(self.ready) + sum(len(ex.queue) for ex in self._executors)

    def room(self) -> int:
        """How many attempts to claim now: the free capacity once half of it is free."""
        capacity = self._depth() * self.size
        free = capacity - self.held
        return free if free >= max(1, capacity // 2) else 0

    def complete_delay(self) -> float:
        """How long finished attempts may wait to be completed together (see the pacer)."""
        return self._pacer.complete_delay(time.monotonic(), self._held_handlers())

    def _depth(self) -> int:
        """Queue depth per executor, paced by the handlers of the attempts held now."""
        return self._pacer.depth(time.monotonic(), self._held_handlers())

    def _held_handlers(self) -> set[str]:
        held = {a.work.handler for a in self.ready}
        for ex in self._executors:
            held.update(a.work.handler for a in ex.queue)
        return held

    def add(self, attempts: Iterable[Attempt]) -> None:
        """Hold claimed attempts until an executor has room for them."""
        now = time.monotonic()
        claimed = self._pacer.claimed
        for a in attempts:
            claimed(a.work.handler, now, len(a.work.payload))
            self.ready.append(a)

    def take_finished(self) -> list[Finished]:
        finished, self._finished = self._finished, []
        return finished

    def take_dropped_results(self) -> list[str]:
        """Keys of result blobs that lost attempts wrote, or may have written before their
        executor was killed: no task will name them."""
        dropped, self._dropped_results = self._dropped_results, []
        return dropped

    def dispatch(self) -> None:
        """Send ready attempts to executors in whole batches, spread evenly, up to depth."""
        self._respawn()
        if not self.ready:
            return
        depth = self._depth()
        live = sorted(
            (e for e in self._executors if not (e.is_exiting or e.is_closed)),
            key=lambda e: len(e.queue),
        )
        for n_left, ex in zip(range(len(live), 0, -1), live, strict=True):
            take = min(depth - len(ex.queue), -(-len(self.ready) // n_left))
            if take <= 0:
                continue
            attempts = [self.ready.popleft() for _ in range(take)]
            blobs: dict[str, bytes] = {}
            for a in attempts:
                if a.handler_blob is not None and a.work.handler not in ex.sent_pickles:
                    blobs[a.work.handler] = a.handler_blob
                    ex.sent_pickles.add(a.work.handler)
            if not ex.queue:
                ex.head_started = time.monotonic()
            ex.queue.extend(attempts)
            ex.send(encoder.encode(Batch([a.work for a in attempts], blobs)))

    def gather(self, timeout_s: float, wake_fd: int) -> None:
        """Wait up to ``timeout_s`` for outcomes, exits or ``wake_fd``; take in what arrived."""
        by_fd = self._watch(wake_fd)
        timeout_ms = math.ceil(timeout_s * 1000) if timeout_s > 0 else 0
        woken: dict[int, ExecutorProcess] = {}
        exited: set[int] = set()  # executors whose exit descriptor is ready
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == wake_fd:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_fd, 4096):
                        pass
            elif (ex := by_fd.get(fd)) is not None:
                woken[id(ex)] = ex
                if fd == ex.sentinel:
                    exited.add(id(ex))
        for key, ex in woken.items():
            self._receive(ex, has_exited=key in exited)

    def _watch(self, wake_fd: int) -> dict[int, ExecutorProcess]:
        """The executors by the descriptors to wait on (channel and exit descriptor). The
        poll set is kept between turns and only rebuilt when the executors change: making
        it anew every turn cost more than the wait itself."""
        key = (wake_fd, *((id(ex), ex.pid) for ex in self._executors if not ex.is_closed))
        if key != self._poll_key:
            self._poller = select.poll()
            self._poller.register(wake_fd, select.POLLIN)
            self._by_fd = {}
            for ex in self._executors:
                if not ex.is_closed:
                    for fd in (ex.channel.fileno(), ex.sentinel):
                        self._poller.register(fd, select.POLLIN)
                        self._by_fd[fd] = ex
            self._poll_key = key
        return self._by_fd

    def next_deadline(self) -> float:
        """The monotonic time at which some running attempt must be stopped."""
        return min((self._head_deadline(ex) for ex in self._executors), default=math.inf)

    def enforce_deadlines(self) -> None:
        """Kill executors whose running attempt overran its timeout or lost its lease."""
        now = time.monotonic()
        for ex in list(self._executors):
            if now < self._head_deadline(ex):
                continue
            if not ex.is_ready:
                log.error(
                    "executor %d did not start within %g s; replacing it",
                    ex.index,
                    STARTUP_TIMEOUT_S,
                )
                self._replace(ex, None, is_head_started=False)
                continue
            head = ex.queue[0]
            if head.key in self._lost:
                log.info("stopping lost attempt %s #%d", *head.key, extra=self._log_ctx(head))
                self._replace(ex, None)
                self._dropped_results.append(output_blob_key(*head.key))  # if it got that far
                continue
            message = (
                f"task {head.key[0]} attempt {head.key[1]} ran past its "
                f"{head.claim.timeout_s:g} s timeout and was killed"
            )
            log.warning("%s", message, extra=self._log_ctx(head))
            self.stats.timeouts += 1
            self._pacer.observe(head.work.handler, now - ex.head_started)
            self._replace(
                ex, ErrorInfo(kind=FailureKind.TIMEOUT, type="TaskTimeout", message=message)
            )

    def stop_lost(self, keys: Iterable[AttemptKey]) -> None:
        """Stop attempts whose lease is lost: drop unsent ones, skip queued ones, and mark
        running ones so :meth:`enforce_deadlines` kills their executor."""
        lost = set(keys)
        if not lost:
            return
        if any(a.key in lost for a in self.ready):
            kept = [a for a in self.ready if a.key not in lost]
            self.stats.lost += len(self.ready) - len(kept)
            self.ready = deque(kept)
        now = time.monotonic()
        for ex in self._executors:
            for i, a in enumerate(ex.queue):
                if a.key in lost:
                    self._lost[a.key] = now
                    if i > 0 or not ex.is_ready:
                        ex.send(encoder.encode(Skip(*a.key)))

    # -- internals ------------------------------------------------------------------------
    def _spawn(self, index: int) -> ExecutorProcess:
        return ExecutorProcess(self._ctx, index, self.max_memory_mb, self.blobs)

    def _receive(self, ex: ExecutorProcess, has_exited: bool) -> None:
        """Take in an executor's outcomes; handle its end if its channel closed or its
        exit descriptor said it ``has_exited`` (a child it forked may keep the channel open)."""
        is_dead = False
        while True:
            try:
                frames = ex.channel.receive(block=False)
            except (EOFError, OSError):
                is_dead = True
                break
            if not frames:
                break
            for frame in frames:
                if frame:
                    self._on_outcome(ex, outcome_decoder.decode(frame))
                else:
                    ex.is_ready = True
                    ex.head_started = time.monotonic()
        if is_dead or (has_exited and not ex.process.is_alive()):
            self._on_exit(ex)

    def _on_outcome(self, ex: ExecutorProcess, outcome: Outcome) -> None:
        if outcome.is_exiting:
            ex.is_exiting = True
        if not ex.queue or ex.queue[0].key != (outcome.task_id, outcome.attempt):
            log.error("executor %d answered an attempt it was not running: %s", ex.index, outcome)
            return
        attempt = ex.queue.popleft()
        ex.head_started = time.monotonic()
        if self._lost and self._lost.pop(attempt.key, None) is not None:
            self.stats.lost += 1
            if outcome.result_ref is not None:
                self._dropped_results.append(outcome.result_ref)
            return  # its lease is gone: another attempt or a cancellation owns the task
        if outcome.is_skipped:
            return
        self._pacer.observe(attempt.work.handler, outcome.duration_s)
        self._finished.append((attempt.claim, outcome))

    def _on_exit(self, ex: ExecutorProcess) -> None:
        """An executor ended on its own: blame its running attempt unless it said it would."""
        reason = ex.describe_exit()
        if ex.is_exiting:
            self._replace(ex, None, is_head_started=False)
            return
        self.stats.crashes += 1
        head = ex.queue[0] if ex.queue else None
        running = f"task {head.key[0]} attempt {head.key[1]}" if head else "no task"
        message = f"executor process {ex.pid} {reason} while running {running}"
        log.warning("%s", message, extra=self._log_ctx(head))
        self._replace(
            ex, ErrorInfo(kind=FailureKind.ERROR, type="ExecutorCrashed", message=message)
        )

    def _replace(
        self, ex: ExecutorProcess, blame: ErrorInfo | None, is_head_started: bool = True
    ) -> None:
        """Kill ``ex``, fail its head with ``blame``, re-queue the rest, start a new one."""
        ex.kill()
        queue = ex.queue
        if queue and is_head_started:
            head = queue.popleft()
            if self._lost.pop(head.key, None) is not None:
                self.stats.lost += 1
            elif blame is not None:
                self._finished.append((head.claim, blame))
        for a in reversed(queue):
            if self._lost.pop(a.key, None) is None:
                self.ready.appendleft(a)
            else:
                self.stats.lost += 1
        queue.clear()
        self._respawn()

    def _respawn(self) -> None:
        """Start a new executor in place of each closed one (again next turn if it fails)."""
        if self._is_closing:
            return
        for i, ex in enumerate(self._executors):
            if ex.is_closed:
                try:
                    self._executors[i] = self._spawn(ex.index)
                except OSError:
                    log.exception("cannot start executor %d; retrying", ex.index)
                    return

    def _head_deadline(self, ex: ExecutorProcess) -> float:
        """When the attempt running on ``ex`` must be stopped (timeout or lost lease)."""
        if not ex.queue:
            return math.inf
        if not ex.is_ready:
            return ex.started_at + STARTUP_TIMEOUT_S
        head = ex.queue[0]
        deadline = math.inf
        if head.claim.timeout_s is not None:
            deadline = ex.head_started + head.claim.timeout_s
        lost_at = self._lost.get(head.key) if self._lost else None
        if lost_at is not None:
            deadline = min(deadline, max(lost_at, ex.head_started) + LOST_GRACE_S)
        return deadline

    def _log_ctx(self, a: Attempt | None) -> dict[str, object]:
        """Structured log context of an attempt."""
        if a is None:
            return {"worker_id": self.worker_id}
        return {"worker_id": self.worker_id, "task_id": a.key[0], "attempt": a.key[1]}
