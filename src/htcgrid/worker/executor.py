"""Executor processes: where user code runs, so nothing it does can stop the agent.

The child side (:func:`executor_main`) runs a loop: receive batches, run each task, answer
each with one :class:`~htcgrid.worker.protocol.Outcome`. The agent side
(:class:`ExecutorProcess`) starts it, sends to it from a thread of its own (a full pipe must
never block the agent's loop), and kills it when an attempt overruns, is lost or crashes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
from collections import deque
from multiprocessing.context import SpawnContext, SpawnProcess

import msgspec

from htcgrid import codec as codecs
from htcgrid.backends.blobs import BlobStore, output_blob_key
from htcgrid.backends.registry import open_blob_store
from htcgrid.core.errors import GridError, NotFound
from htcgrid.core.model import Claim, Codec
from htcgrid.worker.channel import Channel, frame
from htcgrid.worker.handlers import HandlerLoader, blob_error, error_info
from htcgrid.worker.malloc import keep_freed_memory
from htcgrid.worker.pacing import QUEUED_WORK_S
from htcgrid.worker.protocol import (
    AttemptKey,
    Batch,
    Outcome,
    Work,
    encoder,
    to_executor_decoder,
)

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: An executor holds a finished attempt's outcome back for up to about this long: half the
#: queued work. The agent claims when half its queue is free, and it only sees that once
#: the outcomes arrive, so a longer hold would let the queue run dry...
HOLD_S = QUEUED_WORK_S / 2
#: ...and at most this many of them.
HOLD_MAX = 64
_CODECS = {c.value: c for c in Codec}


# -- child side ---------------------------------------------------------------------------
class ExecutorBlobs(msgspec.Struct, frozen=True):
    """The grid's blob store, for executors to read large inputs from and write large
    results to themselves: they then go between the store and the executor directly, not
    through the agent and its socket (two megabyte copies fewer per megabyte of task, and
    the agent's thread stays free for claims and completions)."""

    store_url: str  # the store whose blobs these are
    inline_limit: int  # results up to this size still travel inline

    def open(self) -> BlobStore:
        """The store's blobs, opened when a task first needs them: an executor that only
        meets small payloads neither imports a Redis or PostgreSQL client nor connects."""
        return _BlobsOnFirstUse(self.store_url)


class _BlobsOnFirstUse:
    def __init__(self, store_url: str) -> None:
        self._store_url = store_url
        self._store: BlobStore | None = None

    def _opened(self) -> BlobStore:
        if self._store is None:
            store = open_blob_store(self._store_url)
            if store is None:
                raise NotFound("the store keeps its blobs inside the agent's process")
            self._store = store
        return self._store

    def put(self, key: str, data: bytes) -> None:
        self._opened().put(key, data)

    def get(self, key: str) -> bytes:
        return self._opened().get(key)

    def delete_session(self, session_id: str) -> None:
        self._opened().delete_session(session_id)


def executor_main(
    sock: socket.socket,
    agent_pid: int,
    max_memory_mb: int | None,
    blob_access: ExecutorBlobs | None,
    sent: ctypes.c_uint64,
) -> None:
    """Entry point of an executor process: run tasks until the agent closes the channel.

    With tasks queued, it reads the channel before each task only when the agent's ``sent``
    count moved: a socket read right after a long task costs tens of microseconds on a
    virtual machine (cold caches), where reading a shared counter costs nothing.
    """
    _isolate(agent_pid, max_memory_mb)
    keep_freed_memory(max_memory_mb)
    blobs = None if blob_access is None else blob_access.open()
    inline_limit = 0 if blob_access is None else blob_access.inline_limit
    channel = Channel(sock)
    try:
        channel.send(b"")  # ready: attempt timeouts start counting from here
    except OSError:
        return
    loader = HandlerLoader()
    todo: deque[Work] = deque()
    skipped: set[AttemptKey] = set()
    held = _Held(channel)
    seen = -1  # the agent's sent count when the channel was last read
    try:
        while True:
            if not todo or sent.value != seen:
                seen = sent.value  # read before the channel: a later message moves it again
                try:
                    for data in channel.receive(block=not todo):
                        msg = to_executor_decoder.decode(data)
                        if isinstance(msg, Batch):
                            loader.add_pickled(msg.handler_blobs)
                            todo.extend(msg.works)
                        else:
                            skipped.add((msg.task_id, msg.attempt))
                except (EOFError, OSError):
                    return
            if not todo:
                skipped.clear()  # every attempt sent so far was answered: no skip can apply
                continue
            work = todo.popleft()
            if skipped and (work.task_id, work.attempt) in skipped:
                skipped.discard((work.task_id, work.attempt))
                outcome = Outcome(work.task_id, work.attempt, is_skipped=True)
            else:
                outcome = run_work(loader, work, max_memory_mb, blobs, inline_limit)
            held.add(encoder.encode(outcome), outcome.duration_s)
            if todo and may_hold(work, outcome, todo[0]) and held.may_wait():
                held.hold()
            else:
                held.send()
            if outcome.is_exiting:
                return
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            held.close()


def may_hold(work: Work, outcome: Outcome, following: Work) -> bool:
    """Whether an outcome may wait to go out after the ``following`` task. Not if either
    has a timeout: the agent, counting the held one as still running, would stop the
    executor for it, or never start the clock of the following one. Nor an executor's last
    words."""
    return not (work.has_timeout or following.has_timeout or outcome.is_exiting)


class _Held:
    """Outcomes held back so that a run of short tasks is answered in one message: the
    agent then wakes once per group instead of once per task, taking that much less CPU
    from the executors. Nothing is held while no other task is queued here, and a thread
    sends what is held once the first of it has waited HOLD_S, even while a task that
    turned out long is running."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._frames: list[bytes] = []
        self._since = 0.0
        self._last_s = 0.0
        self._deadline: float | None = None
        self._lock = threading.Condition()
        self._is_closed = False
        threading.Thread(target=self._send_late, name="htcgrid-outcomes", daemon=True).start()

    def add(self, frame: bytes, duration_s: float) -> None:
        with self._lock:
            if not self._frames:
                self._since = time.monotonic()
            self._frames.append(frame)
            self._last_s = duration_s

    def may_wait(self) -> bool:
        """Whether the next task, if it runs as long as the last one, ends within HOLD_S of
        the first held outcome: otherwise holding gains nothing."""
        with self._lock:
            age = time.monotonic() - self._since
            return len(self._frames) < HOLD_MAX and age + self._last_s <= HOLD_S

    def hold(self) -> None:
        """Keep what is held for now; the sender thread sends it at the deadline."""
        with self._lock:
            if self._deadline is None:
                self._deadline = self._since + HOLD_S
                self._lock.notify()

    def send(self) -> None:
        with self._lock:
            self._send()

    def close(self) -> None:
        with self._lock:
            self._is_closed = True
            self._send()
            self._lock.notify()

    def _send(self) -> None:
        self._deadline = None
        if self._frames:
            frames, self._frames = self._frames, []
            self._channel.send_all(frames)

    def _send_late(self) -> None:
        with self._lock:
            while not self._is_closed:
                if self._deadline is None:
                    self._lock.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                try:
                    self._send()
                except OSError:
                    return  # the agent is gone; the main loop finds out on its own


def run_work(
    loader: HandlerLoader,
    work: Work,
    max_memory_mb: int | None,
    blobs: BlobStore | None = None,
    inline_limit: int = 0,
) -> Outcome:
    """Run one task's handler on its decoded input and encode what it returns; with the
    grid's blob store ``blobs``, read a ``payload_ref`` input from it and write a result
    over ``inline_limit`` bytes to it."""
    started = time.perf_counter()
    payload = work.payload
    if work.payload_ref is not None:
        try:
            if blobs is None:
                raise NotFound("this executor was given no blob store to read inputs from")
            payload = blobs.get(work.payload_ref)
        except (GridError, OSError) as exc:
            error = blob_error("fetch the task's input from the blob store", exc)
            return Outcome(work.task_id, work.attempt, error=error)
    try:
        codec = _CODECS[work.codec]
        handler = loader.load(work.handler)
        result = codecs.encode(codecs.call(handler, codecs.decode(payload, codec)), codec)
    except MemoryError as exc:
        # the heap may be left fragmented or half-built: answer, then let the agent restart us
        limit = f" (executor memory limit {max_memory_mb} MB)" if max_memory_mb else ""
        error = error_info(exc, work.codec)
        error = msgspec.structs.replace(error, message=f"{error.message or 'out of memory'}{limit}")
        elapsed = time.perf_counter() - started
        return Outcome(work.task_id, work.attempt, error=error, duration_s=elapsed, is_exiting=True)
    except BaseException as exc:  # the task boundary: whatever user code raises is its outcome
        elapsed = time.perf_counter() - started
        return Outcome(
            work.task_id, work.attempt, error=error_info(exc, work.codec), duration_s=elapsed
        )
    elapsed = time.perf_counter() - started
    if blobs is None or len(result) <= inline_limit:
        return Outcome(work.task_id, work.attempt, result=result, duration_s=elapsed)
    key = output_blob_key(work.task_id, work.attempt)
    try:
        blobs.put(key, result)
    except (GridError, OSError) as exc:
        error = blob_error(f"store the {len(result):,}-byte result in the blob store", exc)
        return Outcome(work.task_id, work.attempt, error=error, duration_s=elapsed)
    return Outcome(work.task_id, work.attempt, result_ref=key, duration_s=elapsed)


def _isolate(agent_pid: int, max_memory_mb: int | None) -> None:
    """Own process group (terminal signals go to the agent only; a kill takes the task's
    children too), die with the agent, and cap the address space when asked."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent_pid:  # the agent died before we could ask to follow it
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    if max_memory_mb is not None:
        limit = max_memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# -- agent side ---------------------------------------------------------------------------
class Attempt:
    """A claimed attempt on the agent side: its claim and the work message that runs it."""

    __slots__ = ("claim", "handler_blob", "key", "work")

    def __init__(self, claim: Claim, work: Work, handler_blob: bytes | None) -> None:
        self.claim = claim
        self.work = work
        self.handler_blob = handler_blob  # the pickled handler, when it is one
        self.key: AttemptKey = (work.task_id, work.attempt)


class ExecutorProcess:
    """The agent's handle on one executor process and the attempts queued on it."""

    def __init__(
        self,
        ctx: SpawnContext,
        index: int,
        max_memory_mb: int | None,
        blobs: ExecutorBlobs | None = None,
    ) -> None:
        ours, theirs = socket.socketpair()
        self.index = index
        # messages written to the channel, counted in shared memory after each write
        self._sent: ctypes.c_uint64 = ctx.RawValue(ctypes.c_uint64, 0)
        self.process: SpawnProcess = ctx.Process(
            target=executor_main,
            args=(theirs, os.getpid(), max_memory_mb, blobs, self._sent),
            name=f"htcgrid-executor-{index}",
        )
        self.process.start()
        self._exit_fd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # older kernels: the pipe sentinel serves
                self._exit_fd = os.pidfd_open(self.pid)
        theirs.close()
        self.channel = Channel(ours)
        self.started_at = time.monotonic()
        self.head_started = self.started_at  # when the attempt at the head began running
        self.is_ready = False  # it has started up and said so (an empty message)
        self.is_exiting = False  # it said it will exit: its end is not a crash
        self.exit_code: int | None = None
        self.is_closed = False  # killed or closed: its process and channel are gone
        self.sent_pickles: set[str] = set()
        self.queue: deque[Attempt] = deque()  # sent, not yet answered; the head is running
        # messages the socket could not take at once, written in order by the sender thread
        self._outbox: queue.SimpleQueue[tuple[bytes, ...] | None] = queue.SimpleQueue()
        self._backlog = 0  # messages queued in _outbox and not yet written
        self._send_lock = threading.Lock()
        self._sender = threading.Thread(
            target=self._send_loop, name=f"htcgrid-executor-{index}-sender", daemon=True
        )
        self._sender.start()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @property
    def sentinel(self) -> int:
        """A descriptor that becomes readable when the process ends: a pidfd where the
        system has them. The process's own sentinel (a pipe) is not enough: a child that
        user code forked inherits its write end, and it stays silent while that child lives.
        """
        return self._exit_fd if self._exit_fd is not None else self.process.sentinel

    def send(self, data: bytes) -> None:
        """Send a message without ever blocking the agent: a small one is written at once
        when the socket has room and nothing is queued before it; the rest goes to the
        sender thread, which writes it however long the executor takes to read.

        Writing directly saves waking the sender thread (and a GIL hand-over) per message,
        which is most of the agent's cost per task when tasks are short.
        """
        parts = frame(data)
        with self._send_lock:
            if self._backlog == 0 and len(parts) == 1:
                try:
                    rest = self.channel.write_now(parts[0])
                except OSError:
                    return  # the executor is gone; the agent's loop sees that on its side
                if not rest:
                    self._sent.value += 1
                    return
                parts = (rest,)
            self._backlog += 1
            self._outbox.put(parts)

    def close(self, timeout_s: float) -> None:
        """Let the executor finish and exit (end of its input), killing it after ``timeout_s``."""
        self._outbox.put(None)
        self._sender.join(timeout=timeout_s)
        with contextlib.suppress(OSError):
            self.channel.sock.shutdown(socket.SHUT_WR)
        self.process.join(timeout=timeout_s)
        self.kill()

    def kill(self) -> None:
        """Kill the executor and everything it started, and release its channel."""
        if self.is_closed:
            return
        self.is_closed = True
        if self.pid > 0:
            # its group, even when it exited itself: what the task started goes too. Linux
            # keeps a group's id from being reused while the group has members; once it has
            # none, the id (reaped a moment ago) could only name another group after the
            # pid counter went round, and otherwise this finds nothing.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.process.exitcode is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.join(timeout=5)
        self.exit_code = self.process.exitcode
        self._outbox.put(None)
        self.channel.close()
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        with contextlib.suppress(ValueError):
            self.process.close()

    def describe_exit(self) -> str:
        """How the process ended, naming the signal or exit code."""
        self.process.join(timeout=2)
        return describe_exit_code(self.process.exitcode)

    def _send_loop(self) -> None:
        while (parts := self._outbox.get()) is not None:
            try:
                for part in parts:
                    self.channel.sock.sendall(part)
            except OSError:
                return  # the executor is gone; the agent's loop sees that on its side
            finally:
                with self._send_lock:
                    self._backlog -= 1
                    self._sent.value += 1


def describe_exit_code(code: int | None) -> str:
    """``exited with code 3`` / ``was killed by signal SIGSEGV (11)``."""
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by signal {name} ({-code}){hint}"
    return f"exited with code {code}"
