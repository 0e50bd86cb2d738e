"""Failure drills for the worker: real processes, a real SQLite file, bounded waits."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import pytest

from htcgrid import codec
from htcgrid.backends.blobs import FileBlobStore, output_blob_key
from htcgrid.core.handlers import command_handler, pickle_handler
from htcgrid.core.model import Codec, FailureKind, NewTask
from htcgrid.core.states import TaskState
from tests.e2e.conftest import Grid, result, task, wait_until

pytestmark = pytest.mark.e2e


def test_many_noop_tasks_succeed_exactly_once(grid: Grid) -> None:
    sid = grid.session()
    n = 3000
    ids: list[str] = []
    for start in range(0, n, 1000):
        ids += grid.submit(sid, [task("record", i) for i in range(start, start + 1000)])
    grid.worker("--concurrency", "2")
    grid.wait_finished(sid, n)
    records = grid.records(ids)
    assert grid.backend.counts(sid).succeeded == n
    assert [result(r) for r in records] == list(range(n))
    assert all(r.attempt == 1 and r.n_errors == r.n_lost == 0 for r in records)
    runs = Counter(grid.recorded())
    assert len(runs) == n and set(runs.values()) == {1}  # each handler ran exactly once


def test_killed_worker_task_is_retried_on_another_worker(grid: Grid) -> None:
    sid = grid.session(max_attempts=3)
    (tid,) = grid.submit(sid, [task("record_then_sleep", 1.5)])
    first = grid.worker(lease_ttl_s=1.0)
    wait_until(lambda: grid.recorded() == ["start 1.5"], 20, "the first attempt to start")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    grid.start_reaper()
    grid.worker(lease_ttl_s=1.0)
    grid.wait_finished(sid, 1)
    (r,) = grid.records([tid])
    assert r.state is TaskState.SUCCEEDED and result(r) == 1.5
    assert r.n_lost == 1 and r.attempt == 2 and r.n_errors == 0
    # the first worker's executor died with it: only the second attempt ran to its end
    assert grid.recorded() == ["start 1.5", "start 1.5", "end 1.5"]


def test_raising_handler_fails_after_max_attempts_with_its_error(grid: Grid) -> None:
    sid = grid.session(max_attempts=3)
    (tid,) = grid.submit(sid, [task("boom", 7)])
    grid.worker()
    grid.wait_finished(sid, 1)
    (r,) = grid.records([tid])
    assert r.state is TaskState.FAILED
    assert r.n_errors == 3 and r.attempt == 3
    assert r.error is not None and r.error.kind is FailureKind.ERROR
    assert r.error.type == "handlers.Boom" and r.error.message == "boom 7"
    assert 'raise Boom(f"boom {x}")' in r.error.traceback
    assert r.error.exception is not None


def test_hanging_handler_times_out_and_the_worker_keeps_serving(grid: Grid) -> None:
    sid = grid.session(max_attempts=2)
    hang, *others = grid.submit(
        sid, [task("sleep", 60, timeout_s=0.5), *(task("echo", i) for i in range(20))]
    )
    proc = grid.worker("--concurrency", "1")
    grid.wait_finished(sid, 21)
    (h,) = grid.records([hang])
    assert h.state is TaskState.FAILED and h.n_timeouts == 2 and h.n_errors == 0
    assert h.error is not None and h.error.kind is FailureKind.TIMEOUT
    assert h.error.type == "TaskTimeout" and "0.5 s timeout" in h.error.message
    assert [result(r) for r in grid.records(others)] == list(range(20))
    assert proc.poll() is None


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("segfault", "SIGSEGV"),
        ("hard_exit", "exited with code 3"),
        ("fork_then_exit", "exited with code 3"),
    ],
)
def test_crashing_handler_does_not_take_the_agent_down(grid: Grid, fn: str, expected: str) -> None:
    sid = grid.session(max_attempts=2)
    crash, *others = grid.submit(sid, [task(fn, 0), *(task("echo", i) for i in range(50))])
    proc = grid.worker("--concurrency", "2")
    grid.wait_finished(sid, 51)
    (c,) = grid.records([crash])
    assert c.state is TaskState.FAILED and c.n_errors == 2
    assert c.error is not None and c.error.kind is FailureKind.ERROR
    assert c.error.type == "ExecutorCrashed" and expected in c.error.message
    assert [result(r) for r in grid.records(others)] == list(range(50))
    assert proc.poll() is None
    # what the task left behind in the executor's process group went with it
    for line in grid.recorded():
        pid = int(line.removeprefix("child "))
        wait_until(lambda pid=pid: not _is_running(pid), 10, f"the task's child {pid} to end")


def test_a_result_its_executor_wrote_before_dying_is_deleted(grid: Grid) -> None:
    sid = grid.session(max_attempts=1)
    path = _output_blob_path(grid, sid, 1)
    (crash,) = grid.submit(sid, [task("write_then_exit", str(path))])
    assert crash == f"{sid}.0"
    grid.worker()
    grid.wait_finished(sid, 1)
    (c,) = grid.records([crash])
    assert c.state is TaskState.FAILED and c.error is not None
    assert c.error.type == "ExecutorCrashed" and "exited with code 3" in c.error.message
    wait_until(lambda: not path.exists(), 10, "the dead attempt's result to be deleted")


def test_a_cancelled_attempts_result_is_deleted_when_its_executor_is_stopped(grid: Grid) -> None:
    sid = grid.session()
    path = _output_blob_path(grid, sid, 1)
    (tid,) = grid.submit(sid, [task("write_then_sleep", str(path))])
    grid.worker("--concurrency", "1", lease_ttl_s=0.9)
    wait_until(lambda: grid.recorded() == ["written"], 20, "the task to write its result")
    assert path.exists()
    assert grid.backend.cancel(sid, [tid], time.time()) == 1
    wait_until(lambda: "stopping lost attempt" in grid.logs(), 5, "the worker to stop it")
    wait_until(lambda: not path.exists(), 5, "the stopped attempt's result to be deleted")


def test_a_killed_worker_leaves_no_result_blob_behind(grid: Grid) -> None:
    """Its executors had stored results it never completed; the reaper takes its attempts
    back and deletes those results, and every task still succeeds once, elsewhere."""
    sid = grid.session(max_attempts=5)
    ids = grid.submit(sid, [task("big_result_after", 0.01) for _ in range(400)])
    grid.start_reaper()
    doomed = grid.worker("--concurrency", "2", lease_ttl_s=1.0)
    grid.worker("--concurrency", "2", lease_ttl_s=1.0)
    wait_until(lambda: grid.backend.counts(sid).succeeded >= 50, 20, "the first results")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    grid.wait_finished(sid, 400, timeout_s=60)
    records = grid.records(ids)
    assert all(r.state is TaskState.SUCCEEDED for r in records)
    assert sum(r.n_lost for r in records) >= 1  # the kill took attempts down with it
    named = {r.result_ref.partition("/")[2] for r in records if r.result_ref is not None}
    assert len(named) == 400
    blobs = grid.backend.blobs
    assert isinstance(blobs, FileBlobStore)
    # complete blobs only: a kill in the middle of a write may leave a hidden temporary file
    stored = {p.name for p in (blobs.root / sid).iterdir() if p.name.startswith("output-")}
    assert stored == named


def _output_blob_path(grid: Grid, sid: str, attempt: int) -> Path:
    """Where the result blob of attempt ``attempt`` of the session's first task goes."""
    blobs = grid.backend.blobs
    assert isinstance(blobs, FileBlobStore)
    path = blobs.root / sid / output_blob_key(f"{sid}.0", attempt).partition("/")[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_memory_exhaustion_under_max_memory_mb(grid: Grid) -> None:
    sid = grid.session(max_attempts=1)
    hog, ok = grid.submit(sid, [task("hog_memory", 2048), task("echo", "ok")])
    proc = grid.worker("--max-memory-mb", "256")
    grid.wait_finished(sid, 2)
    h, o = grid.records([hog, ok])
    assert h.state is TaskState.FAILED and h.n_errors == 1
    assert h.error is not None and h.error.kind is FailureKind.ERROR
    assert h.error.type in {"MemoryError", "ExecutorCrashed"}
    assert "256 MB" in h.error.message or "signal" in h.error.message
    assert o.state is TaskState.SUCCEEDED and result(o) == "ok"
    assert proc.poll() is None


def test_cancelled_running_task_is_stopped_on_its_worker(grid: Grid) -> None:
    sid = grid.session()
    (tid,) = grid.submit(sid, [task("record_then_sleep", 30)])
    grid.worker("--concurrency", "1", lease_ttl_s=0.9)
    wait_until(lambda: grid.recorded() == ["start 30"], 20, "the task to start")
    assert grid.backend.cancel(sid, [tid], time.time()) == 1
    wait_until(lambda: "stopping lost attempt" in grid.logs(), 5, "the worker to stop it")
    # its only executor is free again: a new task runs at once, not after the 30 s sleep
    sid2 = grid.session()
    (next_tid,) = grid.submit(sid2, [task("echo", 1)])
    grid.wait_finished(sid2, 1, timeout_s=10)
    (r,) = grid.records([tid])
    assert r.state is TaskState.CANCELLED
    assert grid.records([next_tid])[0].state is TaskState.SUCCEEDED


def test_sigterm_drains_in_flight_tasks_and_exits_0(grid: Grid) -> None:
    sid = grid.session()
    ids = grid.submit(sid, [task("sleep", 1.0) for _ in range(4)])
    proc = grid.worker("--concurrency", "2")
    wait_until(lambda: grid.backend.counts(sid).running == 2, 20, "two running tasks")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    counts = grid.backend.counts(sid)
    assert counts.succeeded == 2 and counts.running == 0 and counts.pending == 2
    done = [r for r in grid.records(ids) if r.state is TaskState.SUCCEEDED]
    assert all(r.attempt == 1 for r in done)


def test_second_sigterm_abandons_the_drain(grid: Grid) -> None:
    sid = grid.session()
    grid.submit(sid, [task("sleep", 30)])
    proc = grid.worker()
    wait_until(lambda: grid.backend.counts(sid).running == 1, 20, "a running task")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 1
    assert grid.backend.counts(sid).running == 1  # left to the reaper, not completed


def test_no_pickle_worker_refuses_pickle_tasks(grid: Grid) -> None:
    sid = grid.session()
    key = f"{sid}/handler-1"
    grid.backend.blobs.put(key, cloudpickle.dumps(lambda x: x))
    pickled_payload, pickled_handler, ok = grid.submit(
        sid,
        [
            task("echo", 1),
            NewTask(handler=pickle_handler(key), codec=Codec.MSGPACK, payload=b"\x01"),
            task("echo", 2, Codec.MSGPACK),
        ],
    )
    grid.worker("--no-pickle")
    grid.wait_finished(sid, 3)
    for r in grid.records([pickled_payload, pickled_handler]):
        assert r.state is TaskState.FAILED and r.attempt == 1
        assert r.error is not None and r.error.kind is FailureKind.REFUSED
        assert "--no-pickle" in r.error.message
    (o,) = grid.records([ok])
    assert o.state is TaskState.SUCCEEDED and result(o) == 2


def test_large_payloads_results_and_commands(grid: Grid) -> None:
    sid = grid.session()
    big = os.urandom(200_000)
    key = f"{sid}/input-1"
    grid.backend.blobs.put(key, big)
    big_in, big_out, cmd = grid.submit(
        sid,
        [
            NewTask(handler="import:handlers:echo", codec=Codec.RAW, payload=None, payload_ref=key),
            task("big_result", 300_000),
            NewTask(
                handler=command_handler(["echo"]), codec=Codec.MSGPACK, payload=b"\x92\xa1a\xa1b"
            ),
        ],
    )
    grid.worker()
    grid.wait_finished(sid, 3)
    i, o, c = grid.records([big_in, big_out, cmd])
    assert i.state is o.state is c.state is TaskState.SUCCEEDED
    assert i.result_ref is not None and grid.backend.blobs.get(i.result_ref) == big
    assert o.result_ref is not None
    assert codec.decode(grid.backend.blobs.get(o.result_ref), Codec.PICKLE) == b"x" * 300_000
    assert result(c) == "a b\n"
