"""The agent against the memory backend, in this process, with real executor processes."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import cloudpickle
import pytest

from htcgrid import codec
from htcgrid.backends.blobs import new_blob_key
from htcgrid.backends.memory import MemoryBackend
from htcgrid.core.errors import NotFound
from htcgrid.core.handlers import command_handler, import_handler, pickle_handler
from htcgrid.core.ids import new_session_id
from htcgrid.core.model import Codec, Completion, FailureKind, NewTask, SessionSpec
from htcgrid.core.retry import decide_failure, lost_error
from htcgrid.core.states import TaskState
from htcgrid.worker import Worker, WorkerSettings


@contextmanager
def running(backend: MemoryBackend, **settings: Any) -> Iterator[Worker]:
    worker = Worker(WorkerSettings(store_url="memory://", **settings), backend=backend)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()


def session(backend: MemoryBackend, **spec: Any) -> str:
    sid = new_session_id()
    backend.create_session(sid, SessionSpec(**spec), time.time())
    return sid


def task(ref: str, value: Any, c: Codec = Codec.PICKLE, **kw: Any) -> NewTask:
    return NewTask(handler=ref, codec=c, payload=codec.encode(value, c), **kw)


def wait_until(pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def finish(backend: MemoryBackend, sid: str, n: int) -> None:
    wait_until(lambda: backend.counts(sid).finished >= n)


class _CountingBackend(MemoryBackend):
    """Counts the claims that took nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.empty_claims = 0

    def claim(self, worker_id: str, max_tasks: int, lease_ttl_s: float, now: float) -> Any:
        claims = super().claim(worker_id, max_tasks, lease_ttl_s, now)
        self.empty_claims += not claims
        return claims


def test_a_worker_that_drained_the_store_waits_before_it_claims_again() -> None:
    """One task at a time (W2): after completing it, the worker waits for the next (the
    store's wait sees work) instead of first making a claim bound to find nothing."""
    b = _CountingBackend()
    assert b.capabilities.wait_sees_work
    sid = session(b)
    b.submit(sid, [task(import_handler("operator:neg"), 0)], time.time())
    with running(b, idle_wait_s=5.0):  # no idle claim in the few ms each task takes
        finish(b, sid, 1)
        for i in range(1, 6):
            b.submit(sid, [task(import_handler("operator:neg"), i)], time.time())
            finish(b, sid, i + 1)
        # the first claim asked for one task (its handler's duration was not known yet) and
        # got it: that did not show the store drained, so one empty claim may follow it
        assert b.empty_claims <= 1
    assert [pickle.loads(r.result or b"") for r in b.finished(sid, 0, 10)] == [
        0,
        -1,
        -2,
        -3,
        -4,
        -5,
    ]


def test_many_tasks_succeed_once_with_their_results() -> None:
    b = MemoryBackend()
    sid = session(b)
    with running(b, concurrency=2) as w:
        b.submit(sid, [task(import_handler("operator:neg"), i) for i in range(3000)], time.time())
        finish(b, sid, 3000)
    records = b.finished(sid, 0, 5000)
    assert sorted(pickle.loads(r.result or b"") for r in records) == sorted(-i for i in range(3000))
    assert all(r.attempt == 1 and r.state is TaskState.SUCCEEDED for r in records)
    assert w.stats.succeeded == 3000 and w.is_drained


def test_pickled_command_and_blob_handlers() -> None:
    b = MemoryBackend()
    sid = session(b)
    key = f"{sid}/handler-1"
    b.blobs.put(key, cloudpickle.dumps(lambda x: x * 2))
    b.blobs.put(f"{sid}/input-1", codec.encode(21, Codec.PICKLE))
    with running(b, inline_limit=100) as w:
        b.submit(
            sid,
            [
                task(pickle_handler(key), 5),
                NewTask(handler=pickle_handler(key), payload=None, payload_ref=f"{sid}/input-1"),
                task(command_handler(["echo"]), ["hi"], Codec.MSGPACK),
                task(import_handler("operator:mul"), codec.Args((b"y", 1000), {})),
            ],
            time.time(),
        )
        finish(b, sid, 4)
    r = b.tasks([f"{sid}.{i}" for i in range(4)])
    assert [x.state for x in r] == [TaskState.SUCCEEDED] * 4, [x.error for x in r]
    assert pickle.loads(r[0].result or b"") == 10
    assert pickle.loads(r[1].result or b"") == 42
    assert codec.decode(r[2].result or b"", Codec.MSGPACK) == "hi\n"
    assert r[3].result is None and r[3].result_ref is not None
    assert pickle.loads(b.blobs.get(r[3].result_ref)) == b"y" * 1000
    assert w.stats.succeeded == 4


def test_errors_crashes_and_timeouts_end_in_retry_then_failure() -> None:
    b = MemoryBackend()
    sid = session(b, max_attempts=2)
    tasks = [
        task(import_handler("math:sqrt"), -1.0),
        task(import_handler("ctypes:string_at"), 0),
        task(import_handler("os:_exit"), 3),
        task(import_handler("time:sleep"), 30, timeout_s=0.3),
        task(import_handler("operator:neg"), 1),
    ]
    with running(b, concurrency=2):
        b.submit(sid, tasks, time.time())
        finish(b, sid, 5)
    err, segv, exit3, hang, ok = b.tasks([f"{sid}.{i}" for i in range(5)])
    assert ok.state is TaskState.SUCCEEDED
    for r in (err, segv, exit3, hang):
        assert r.state is TaskState.FAILED and r.attempt == 2 and r.error is not None
    assert err.error is not None and err.error.type == "ValueError" and err.n_errors == 2
    assert segv.error is not None and segv.error.type == "ExecutorCrashed"
    assert "SIGSEGV" in segv.error.message
    assert exit3.error is not None and "exited with code 3" in exit3.error.message
    assert hang.error is not None and hang.error.kind is FailureKind.TIMEOUT
    assert hang.error.type == "TaskTimeout" and hang.n_timeouts == 2


def test_memory_limit_fails_the_attempt_and_the_executor_is_replaced() -> None:
    b = MemoryBackend()
    sid = session(b, max_attempts=1)
    with running(b, max_memory_mb=300):
        b.submit(sid, [task(import_handler("builtins:bytearray"), 2**31)], time.time())
        b.submit(sid, [task(import_handler("operator:neg"), 1)], time.time())
        finish(b, sid, 2)
    hog, ok = b.tasks([f"{sid}.0", f"{sid}.1"])
    assert hog.error is not None and hog.error.kind is FailureKind.ERROR
    assert hog.error.type in {"MemoryError", "ExecutorCrashed"}
    assert ok.state is TaskState.SUCCEEDED


def test_cancelled_running_task_is_stopped_and_stays_cancelled() -> None:
    b = MemoryBackend()
    sid = session(b)
    with running(b, lease_ttl_s=0.6) as w:
        b.submit(sid, [task(import_handler("time:sleep"), 30)], time.time())
        wait_until(lambda: b.counts(sid).running == 1)
        time.sleep(0.3)
        assert b.cancel(sid, None, time.time()) == 1
        wait_until(lambda: w.stats.lost == 1, timeout_s=5)
    (r,) = b.tasks([f"{sid}.0"])
    assert r.state is TaskState.CANCELLED
    assert w.stats.rejected == 0


def test_no_pickle_worker_refuses_pickle_tasks() -> None:
    b = MemoryBackend()
    sid = session(b)
    with running(b, allow_pickle=False):
        b.submit(
            sid,
            [
                task(import_handler("operator:neg"), 1),
                task(import_handler("operator:neg"), 1, Codec.MSGPACK),
            ],
            time.time(),
        )
        finish(b, sid, 2)
    refused, ok = b.tasks([f"{sid}.0", f"{sid}.1"])
    assert refused.state is TaskState.FAILED and refused.attempt == 1
    assert refused.error is not None and refused.error.kind is FailureKind.REFUSED
    assert "--no-pickle" in refused.error.message
    assert ok.state is TaskState.SUCCEEDED
    assert codec.decode(ok.result or b"", Codec.MSGPACK) == -1


def test_stop_drains_held_attempts() -> None:
    b = MemoryBackend()
    sid = session(b)
    with running(b, concurrency=2) as w:
        b.submit(sid, [task(import_handler("time:sleep"), 0.5) for _ in range(2)], time.time())
        wait_until(lambda: b.counts(sid).running == 2)
    assert w.is_drained
    assert b.counts(sid).succeeded == 2


def test_timeouts_count_from_when_a_restarted_executor_is_ready() -> None:
    b = MemoryBackend()
    sid = session(b, max_attempts=1)
    tasks = [task(import_handler("os:_exit"), 3)]
    tasks += [task(import_handler("time:sleep"), 0.05, timeout_s=0.3) for _ in range(3)]
    with running(b, concurrency=1):
        b.submit(sid, tasks, time.time())
        finish(b, sid, 4)
    records = b.tasks([f"{sid}.{i}" for i in range(4)])
    assert [r.state for r in records] == [TaskState.FAILED] + [TaskState.SUCCEEDED] * 3


class CountingBackend(MemoryBackend):
    """Counts the completion calls a worker makes, and how many attempts each carried."""

    def __init__(self) -> None:
        super().__init__()
        self.complete_sizes: list[int] = []

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        self.complete_sizes.append(len(completions))
        return super().complete(completions, now)


def test_a_busy_worker_completes_in_groups_and_a_lone_task_at_once() -> None:
    b = CountingBackend()
    sid = session(b)
    burn = import_handler("htcgrid.workloads:burn_cpu_ms")
    with running(b, concurrency=1):
        b.submit(sid, [task(burn, 5.0) for _ in range(3)], time.time())  # learn the duration
        finish(b, sid, 3)
        b.complete_sizes.clear()
        b.submit(sid, [task(burn, 5.0) for _ in range(60)], time.time())
        finish(b, sid, 63)
        grouped = list(b.complete_sizes)
        b.complete_sizes.clear()
        b.submit(sid, [task(burn, 5.0)], time.time())
        finish(b, sid, 64)
    assert sum(grouped) == 60
    assert len(grouped) <= 30, grouped  # one store call per task would be 60
    assert b.complete_sizes == [1]


def test_input_blobs_are_deleted_once_their_task_has_finished() -> None:
    b = MemoryBackend()
    sid = session(b, max_attempts=2)
    done_key, retried_key = new_blob_key(sid, "input"), new_blob_key(sid, "input")
    shared_key = f"{sid}/input-shared"  # not a generated per-task name: kept
    b.blobs.put(done_key, codec.encode(b"x" * 100_000, Codec.PICKLE))
    b.blobs.put(retried_key, codec.encode(-1.0, Codec.PICKLE))
    b.blobs.put(shared_key, codec.encode(3, Codec.PICKLE))
    tasks = [
        NewTask(handler=import_handler("builtins:len"), payload=None, payload_ref=done_key),
        NewTask(handler=import_handler("math:sqrt"), payload=None, payload_ref=retried_key),
        NewTask(handler=import_handler("operator:neg"), payload=None, payload_ref=shared_key),
    ]
    with running(b):
        b.submit(sid, tasks, time.time())
        finish(b, sid, 3)
    ok, failed, shared = b.tasks([f"{sid}.{i}" for i in range(3)])
    assert ok.state is TaskState.SUCCEEDED and pickle.loads(ok.result or b"") == 100_000
    assert failed.state is TaskState.FAILED and failed.attempt == 2  # retried once, with input
    assert shared.state is TaskState.SUCCEEDED
    for key in (done_key, retried_key):
        with pytest.raises(NotFound):
            b.blobs.get(key)
    assert b.blobs.get(shared_key)


class _ReapedOnce(MemoryBackend):
    """A store where the reaper takes the first completed attempt back just before its
    completion arrives, as it would from a worker that looked dead: that completion is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.refused_refs: list[str] = []

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        if not self.refused_refs:  # as the reaper does, with every running lease expired
            later = now + 3600
            leases = self.expired(later, 100)
            self.expire([decide_failure(x, lost_error(x), now) for x in leases], later)
        accepted = super().complete(completions, now)
        for c, ok in zip(completions, accepted, strict=True):
            if not ok and c.result_ref is not None:
                self.refused_refs.append(c.result_ref)
        return accepted


def test_a_refused_completions_result_blob_is_deleted_and_the_accepted_one_kept() -> None:
    b = _ReapedOnce()
    sid = session(b, max_attempts=3)
    with running(b, inline_limit=10):  # the result, "12345" pickled, goes to a blob
        b.submit(sid, [task(import_handler("builtins:str"), 12345)], time.time())
        finish(b, sid, 1)
    (record,) = b.tasks([f"{sid}.0"])
    assert record.state is TaskState.SUCCEEDED and record.attempt == 2  # retried once
    assert record.result_ref is not None
    assert pickle.loads(b.blobs.get(record.result_ref)) == "12345"
    assert len(b.refused_refs) == 1 and b.refused_refs[0] != record.result_ref
    with pytest.raises(NotFound):  # the late attempt's result no longer takes space
        b.blobs.get(b.refused_refs[0])


class _AnswerLost(MemoryBackend):
    """A store whose answer to a completion is lost after it was applied: the backend's
    repeat of the call is refused by the fence, so the worker is told False."""

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        super().complete(completions, now)
        return [False] * len(completions)


def test_a_result_blob_the_task_names_is_kept_though_its_completion_was_reported_refused() -> None:
    b = _AnswerLost()
    sid = session(b)
    with running(b, inline_limit=10):
        b.submit(sid, [task(import_handler("builtins:str"), 12345)], time.time())
        finish(b, sid, 1)
    (record,) = b.tasks([f"{sid}.0"])
    assert record.state is TaskState.SUCCEEDED and record.result_ref is not None
    assert pickle.loads(b.blobs.get(record.result_ref)) == "12345"
