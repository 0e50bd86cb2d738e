"""The agent: claims attempts in batches, feeds the executor pool, completes in groups.

One loop turn: wait on the executors' channels (and process sentinels) for outcomes, stop
attempts that overran or were lost, claim while the pool has room and dispatch whole batches
to executors, then complete what finished in one store call. While executors are busy the
claim goes first, so that their queues never wait on the completion's round trip, and a turn
that claimed completes what finished too, so that one wake-up serves both; when the last
attempt finished, its completion goes first. Heartbeats run on a thread of their own and
user code only in executors, so neither can starve the other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from multiprocessing.connection import wait

from htcgrid.backends.base import Backend
from htcgrid.backends.blobs import is_task_input, output_blob_key
from htcgrid.backends.registry import open_backend
from htcgrid.core.errors import BackendUnavailable, GridError, NotFound
from htcgrid.core.model import Claim, Codec, Completion, ErrorInfo, FailureKind, Lease
from htcgrid.core.retry import decide_failure, decide_success
from htcgrid.worker.executor import Attempt, ExecutorBlobs
from htcgrid.worker.handlers import blob_error
from htcgrid.worker.heartbeat import Heartbeat, InFlight
from htcgrid.worker.pool import ExecutorPool, WorkerStats
from htcgrid.worker.protocol import AttemptKey, Work
from htcgrid.worker.settings import WorkerSettings, default_worker_id

log = logging.getLogger(__name__)

_PICKLE_PREFIX = "pickle:"
#: Wait after a claim that returned fewer tasks than asked, before claiming again.
SHORT_CLAIM_PAUSE_S = 0.02
_MAX_WAIT_S = 1.0
_HANDLER_CACHE_SIZE = 64


class Worker:
    """An agent process with ``settings.concurrency`` executor processes.

    ``run()`` blocks until :meth:`stop`. A given ``backend`` is shared with the heartbeat
    thread, so it must be thread-safe; without one the worker opens two from the store URL.
    """

    def __init__(self, settings: WorkerSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.stats = WorkerStats()
        self.is_drained = False  # run() returned after finishing every attempt it held
        self._given_backend = backend
        self._backend: Backend | None = None
        self._pool = ExecutorPool(
            self.worker_id,
            settings.concurrency,
            settings.max_memory_mb,
            settings.max_batch,
            self.stats,
        )
        self._done: list[Completion] = []  # finished attempts, completed in groups
        self._done_since = 0.0  # monotonic time the oldest of them finished
        self._inputs: dict[AttemptKey, str] = {}  # task-owned input blobs of held attempts
        self._in_flight = InFlight()
        self._handler_blobs: dict[str, bytes] = {}
        self._next_claim_at = 0.0
        self._was_short = False  # the last claim took less than asked: the store was drained
        self._waits_first = False  # the store's wait_for_work looks for work (capabilities)
        self._stopping = threading.Event()
        self._killing = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def stop(self) -> None:
        """Drain: claim no more, finish and complete what is held. A second call aborts."""
        if self._stopping.is_set():
            self._killing.set()
        self._stopping.set()
        self._wake()

    def run(self) -> None:
        """Serve until stopped; held attempts are finished unless the drain is aborted."""
        s = self.settings
        backend = self._given_backend or open_backend(s.store_url)
        beat_backend = self._given_backend or open_backend(s.store_url)
        self._backend = backend
        self._waits_first = backend.capabilities.wait_sees_work
        if backend.capabilities.is_shared:  # executors reach the blobs as the agent does
            self._pool.blobs = ExecutorBlobs(backend.url, s.inline_limit)
        heartbeat = Heartbeat(
            beat_backend, self.worker_id, self._in_flight, s.lease_ttl_s, self._wake
        )
        is_drained = False
        try:
            self._pool.start()
            heartbeat.start()
            log.info(
                "worker %s serving %s with %d executor(s)",
                self.worker_id,
                s.store_url,
                s.concurrency,
                extra={"worker_id": self.worker_id},
            )
            is_drained = self._loop()
        finally:
            heartbeat.stop()
            self._pool.close(graceful=is_drained)
            if self._given_backend is None:
                backend.close()
                beat_backend.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        self.is_drained = is_drained
        log.info("worker %s stopped: %s", self.worker_id, self.stats)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe means it is awake already
            os.write(self._wake_w, b"x")

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> bool:
        """Turn until stopped; True when every held attempt was finished and completed."""
        drain_deadline = math.inf
        while True:
            if self._killing.is_set():
                log.warning("worker %s: stop repeated, abandoning attempts", self.worker_id)
                return False
            if self._stopping.is_set():
                if drain_deadline == math.inf:
                    drain_deadline = time.monotonic() + self.settings.drain_timeout_s
                    log.info("worker %s draining %d attempt(s)", self.worker_id, self._pool.held)
                if not self._pool.held and not self._done:
                    return True
                if time.monotonic() >= drain_deadline:
                    log.warning("worker %s: drain timed out, abandoning attempts", self.worker_id)
                    return False
            try:
                self._turn()
            except BackendUnavailable as exc:  # a store restart: no traceback, just wait
                log.warning("worker %s: %s; retrying", self.worker_id, exc)
                wait([self._wake_r], 0.5)
            except Exception:  # the loop boundary: log, back off, keep serving
                log.exception("worker %s: loop turn failed; retrying", self.worker_id)
                wait([self._wake_r], 0.5)

    def _turn(self) -> None:
        pool = self._pool
        pool.gather(self._wait_timeout(), self._wake_r)
        lost = self._in_flight.take_lost()
        for key in lost:
            self._inputs.pop(key, None)
        pool.stop_lost(lost)
        pool.enforce_deadlines()
        unwanted = pool.take_dropped_results()
        for claim, outcome in pool.take_finished():
            if isinstance(outcome, ErrorInfo):  # its executor died or was killed
                # after writing its result, perhaps: that blob is nobody's now
                unwanted.append(output_blob_key(claim.lease.task_id, claim.lease.attempt))
                self._fail(claim.lease, outcome)
            elif outcome.error is not None:
                self._fail(claim.lease, outcome.error)
            elif outcome.result_ref is not None:  # the executor stored it as a blob file
                self._finished(decide_success(claim.lease, None, outcome.result_ref))
            else:
                self._succeed(claim, outcome.result or b"")
        if unwanted:
            self._discard_blobs(unwanted, "result")
        if self._done and not pool.held:
            self._flush()  # nothing else runs here: this result's latency is what matters
        # otherwise refill the executors first: they must not wait on a store round trip
        has_claimed = not self._stopping.is_set() and self._claim()
        pool.dispatch()
        # this turn woke up for the claim anyway: completing now saves a wake-up for it
        if self._done and (has_claimed or time.monotonic() >= self._flush_at()):
            self._flush()

    def _flush_at(self) -> float:
        """When to complete what finished: at once when nothing else runs here (a lone task's
        latency is what matters then) or when stopping; while busy, after the pacer's delay,
        so that one store call completes a group (at most max_batch) of attempts."""
        if not self._pool.held or self._stopping.is_set():
            return 0.0
        if len(self._done) >= self.settings.max_batch:
            return 0.0
        return self._done_since + self._pool.complete_delay()

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        deadline = min(now + _MAX_WAIT_S, self._pool.next_deadline())
        if self._done:
            deadline = min(deadline, self._flush_at())
        if not self._stopping.is_set() and self._pool.room():
            if not self._pool.held:
                return 0.0  # nothing runs here: the next claim blocks in the store instead
            deadline = min(deadline, self._next_claim_at)
        return max(0.0, deadline - now)

    def _claim(self) -> bool:
        """Claim what the pool has room for; True if any attempt was claimed."""
        backend = self._require_backend()
        now = time.monotonic()
        held = self._pool.held
        room = self._pool.room()
        if not room or (held and now < self._next_claim_at):
            return False
        s = self.settings
        if self._waits_first and self._was_short and not held and not self._done:
            # the last claim drained the store: look before claiming (a lone task's worker
            # would otherwise claim again right after completing it, and find nothing)
            backend.wait_for_work(s.idle_wait_s)
            if self._stopping.is_set():
                return False
            now = time.monotonic()
        claims = backend.claim(self.worker_id, room, s.lease_ttl_s, time.time())
        self._was_short = len(claims) < room
        if not claims:
            if held or self._done:
                self._next_claim_at = now + s.idle_wait_s
            elif not self._waits_first:
                backend.wait_for_work(s.idle_wait_s)
            return False
        if len(claims) < room:
            self._next_claim_at = now + SHORT_CLAIM_PAUSE_S
        self.stats.claimed += len(claims)
        self._in_flight.add((c.lease.task_id, c.lease.attempt) for c in claims)
        self._pool.add(a for a in map(self._prepare, claims) if a is not None)
        return True

    def _prepare(self, claim: Claim) -> Attempt | None:
        """The attempt to run for a claim, with its payload and handler bytes; or fail it now."""
        lease = claim.lease
        is_pickled = claim.handler.startswith(_PICKLE_PREFIX)
        if not self.settings.allow_pickle and (is_pickled or claim.codec is Codec.PICKLE):
            what = "a pickled handler" if is_pickled else "a pickle-encoded payload"
            message = (
                f"worker {self.worker_id} was started with --no-pickle and refuses {what}; "
                "use an import: or command: handler with the msgpack or raw codec"
            )
            self._fail(lease, ErrorInfo(kind=FailureKind.REFUSED, type="Refused", message=message))
            return None
        blobs = self._require_backend().blobs
        # when the executors reach the blob store themselves, a large input goes by name
        by_ref = claim.payload_ref is not None and self._pool.blobs is not None
        try:
            payload = claim.payload
            if claim.payload_ref is not None and not by_ref:
                payload = blobs.get(claim.payload_ref)
            handler_blob = None
            if is_pickled:
                handler_blob = self._handler_blobs.get(claim.handler)
                if handler_blob is None:
                    handler_blob = blobs.get(claim.handler[len(_PICKLE_PREFIX) :])
                    if len(self._handler_blobs) >= _HANDLER_CACHE_SIZE:
                        self._handler_blobs.clear()
                    self._handler_blobs[claim.handler] = handler_blob
        except (GridError, OSError) as exc:
            doing = "fetch the task's input or handler from the blob store"
            self._fail(lease, blob_error(doing, exc))
            return None
        if claim.payload_ref is not None and is_task_input(claim.payload_ref):
            self._inputs[(lease.task_id, lease.attempt)] = claim.payload_ref
        work = Work(
            lease.task_id,
            lease.attempt,
            claim.handler,
            claim.codec.value,
            payload or b"",
            has_timeout=claim.timeout_s is not None,
            payload_ref=claim.payload_ref if by_ref else None,
        )
        return Attempt(claim, work, handler_blob)

    def _succeed(self, claim: Claim, result: bytes) -> None:
        lease = claim.lease
        if len(result) <= self.settings.inline_limit:
            self._finished(decide_success(lease, result, None))
            return
        key = output_blob_key(lease.task_id, lease.attempt)
        try:
            self._require_backend().blobs.put(key, result)
        except (GridError, OSError) as exc:
            doing = f"store the {len(result):,}-byte result in the blob store"
            self._fail(lease, blob_error(doing, exc))
            return
        self._finished(decide_success(lease, None, key))

    def _fail(self, lease: Lease, error: ErrorInfo) -> None:
        self.stats.failed += 1
        log.info(
            "task %s attempt %d failed: %s: %s",
            lease.task_id,
            lease.attempt,
            error.type,
            error.message,
            extra={"task_id": lease.task_id, "attempt": lease.attempt, "worker_id": self.worker_id},
        )
        self._finished(decide_failure(lease, error, time.time()))

    def _finished(self, completion: Completion) -> None:
        if not self._done:
            self._done_since = time.monotonic()
        self._done.append(completion)

    def _flush(self) -> None:
        """Complete everything gathered this turn in one store call."""
        if not self._done:
            return
        done = self._done
        accepted = self._require_backend().complete(done, time.time())
        self._done = []
        self._in_flight.discard((c.task_id, c.attempt) for c in done)
        self._discard_inputs(done, accepted)
        self._discard_refused_results(done, accepted)
        n_accepted = sum(accepted)
        self.stats.succeeded += sum(
            1 for c, ok in zip(done, accepted, strict=True) if ok and c.error is None
        )
        if n_accepted < len(done):
            self.stats.rejected += len(done) - n_accepted
            log.info(
                "worker %s: the store rejected %d late completion(s)",
                self.worker_id,
                len(done) - n_accepted,
                extra={"worker_id": self.worker_id},
            )

    def _discard_inputs(self, done: list[Completion], accepted: list[bool]) -> None:
        """Delete the input blobs of tasks that have finished for good: no attempt will read
        them again, and a session of large payloads would otherwise keep every input until
        it is deleted. Retried tasks keep theirs; a failure here only leaves a blob behind."""
        keys = []
        for c, ok in zip(done, accepted, strict=True):
            key = self._inputs.pop((c.task_id, c.attempt), None)
            if key is not None and ok and c.state.is_terminal:
                keys.append(key)
        if keys:
            self._discard_blobs(keys, "input")

    def _discard_refused_results(self, done: list[Completion], accepted: list[bool]) -> None:
        """Delete the result blobs of completions the store refused (a late attempt, whose
        lease had gone to the reaper or another worker): no task names them, and they would
        stay until their session is deleted. A refusal can also answer a completion that was
        applied just before its answer was lost (the backend repeats the call and the fence
        refuses the repeat), so a blob is deleted only if its task's record does not name it."""
        refused = [
            (c.task_id, c.result_ref)
            for c, ok in zip(done, accepted, strict=True)
            if not ok and c.result_ref is not None
        ]
        if not refused:
            return
        try:
            records = self._require_backend().tasks(list({t for t, _ in refused}))
        except NotFound:
            return  # the session was deleted, and its blobs with it
        except (GridError, OSError) as exc:
            log.warning("worker %s: cannot read refused tasks: %s", self.worker_id, exc)
            return
        named = {r.result_ref for r in records}
        self._discard_blobs([key for _, key in refused if key not in named], "result")

    def _discard_blobs(self, keys: list[str], kind: str) -> None:
        """Delete blobs no task needs any more; failing to only leaves them to their session."""
        try:
            self._require_backend().blobs.discard(keys)
        except (GridError, OSError) as exc:
            log.warning(
                "worker %s: cannot delete %d %s blob(s): %s", self.worker_id, len(keys), kind, exc
            )

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the worker is not running")
        return self._backend
