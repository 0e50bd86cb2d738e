"""The worker's pure-ish parts: channel framing, handler loading, error description, leases."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import cloudpickle
import pytest

from htcgrid.backends.blobs import output_blob_key
from htcgrid.backends.sqlite import SqliteBackend
from htcgrid.core.errors import InvalidInput
from htcgrid.core.handlers import command_handler, import_handler, pickle_handler
from htcgrid.core.model import Claim, Codec, FailureKind, Lease
from htcgrid.worker.channel import Channel
from htcgrid.worker.executor import (
    Attempt,
    ExecutorBlobs,
    ExecutorProcess,
    describe_exit_code,
    run_work,
)
from htcgrid.worker.handlers import CommandFailed, HandlerLoader, error_info, type_name
from htcgrid.worker.heartbeat import InFlight
from htcgrid.worker.pool import ExecutorPool, WorkerStats
from htcgrid.worker.protocol import Batch, Skip, Work, encoder, outcome_decoder
from htcgrid.worker.settings import WorkerSettings, default_worker_id


def test_channel_frames_survive_chunking_and_eof() -> None:
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    messages = [b"", b"x", b"y" * 100_000, b"z" * 3]
    for m in messages:
        left.send(m)
    got: list[bytes] = []
    while len(got) < len(messages):
        got.extend(right.receive(block=True))
    assert got == messages
    assert right.receive(block=False) == []
    left.close()
    with pytest.raises(EOFError):
        right.receive(block=True)
    right.close()


def test_loader_imports_and_caches() -> None:
    loader = HandlerLoader()
    fn = loader.load(import_handler("operator:neg"))
    assert fn(3) == -3
    assert loader.load(import_handler("operator:neg")) is fn


def test_loader_unpickles_delivered_handlers() -> None:
    loader = HandlerLoader()
    ref = pickle_handler("s1/handler-abc")
    loader.add_pickled({ref: cloudpickle.dumps(lambda x: x + 1)})
    assert loader.load(ref)(1) == 2


def test_command_handler_returns_stdout_and_reports_failures() -> None:
    loader = HandlerLoader()
    assert loader.load(command_handler(["echo"]))(["a", "b"]) == "a b\n"
    fail = loader.load(command_handler([sys.executable, "-c", "import sys; sys.exit('bad')"]))
    with pytest.raises(CommandFailed, match=r"exited with code 1.*bad"):
        fail([])


def test_run_work_reports_errors_with_type_traceback_and_pickled_exception() -> None:
    work = Work("s.0", 1, import_handler("math:sqrt"), "pickle", pickle.dumps(-1.0))
    outcome = run_work(HandlerLoader(), work, None)
    assert outcome.result is None and outcome.error is not None
    assert outcome.error.kind is FailureKind.ERROR
    assert outcome.error.type == "ValueError"
    assert "math domain error" in outcome.error.message
    assert "Traceback" in outcome.error.traceback
    assert outcome.error.exception is not None
    assert isinstance(pickle.loads(outcome.error.exception), ValueError)


def test_run_work_with_msgpack_does_not_pickle_the_exception() -> None:
    work = Work("s.0", 1, "import:no_such_module_xyz:f", Codec.MSGPACK.value, b"\xc0")
    outcome = run_work(HandlerLoader(), work, None)
    assert outcome.error is not None
    assert outcome.error.type == "ModuleNotFoundError"
    assert outcome.error.exception is None


def test_run_work_reads_and_writes_large_payloads_as_blob_files(tmp_path: Path) -> None:
    files = ExecutorBlobs(f"sqlite://{tmp_path / 'grid.db'}", inline_limit=1000)
    store = files.open()
    store.put("s/input-a", pickle.dumps(b"ab" * 1000))
    work = Work("s.0", 1, import_handler("operator:neg"), "pickle", b"", payload_ref="s/input-a")
    loader = HandlerLoader()
    # operator.neg of bytes raises: the input was read, and the error is the handler's
    failed = run_work(loader, work, None, store, files.inline_limit)
    assert failed.error is not None and failed.error.type == "TypeError"

    work = Work("s.0", 1, import_handler("builtins:bytes"), "pickle", b"", payload_ref="s/input-a")
    big = run_work(loader, work, None, store, files.inline_limit)
    assert big.error is None and big.result is None and big.result_ref is not None
    assert big.result_ref.startswith("s/")
    assert pickle.loads(store.get(big.result_ref)) == b"ab" * 1000

    small = Work("s.1", 1, import_handler("builtins:len"), "pickle", b"", payload_ref="s/input-a")
    inline = run_work(loader, small, None, store, files.inline_limit)
    assert inline.result_ref is None and pickle.loads(inline.result or b"") == 2000


def test_run_work_reports_a_missing_input_blob_as_the_tasks_error(tmp_path: Path) -> None:
    files = ExecutorBlobs(f"sqlite://{tmp_path / 'grid.db'}", inline_limit=1000)
    work = Work("s.0", 2, import_handler("builtins:len"), "pickle", b"", payload_ref="s/gone")
    outcome = run_work(HandlerLoader(), work, None, files.open(), files.inline_limit)
    assert outcome.error is not None and outcome.error.kind is FailureKind.ERROR
    assert "cannot fetch the task's input" in outcome.error.message
    assert (outcome.task_id, outcome.attempt) == ("s.0", 2)


def test_error_info_names_non_builtin_types() -> None:
    assert type_name(CommandFailed("x")) == "htcgrid.worker.handlers.CommandFailed"
    assert error_info(KeyError("k"), "raw").type == "KeyError"


def test_describe_exit_code() -> None:
    assert describe_exit_code(3) == "exited with code 3"
    assert "SIGSEGV" in describe_exit_code(-11)
    assert "SIGKILL" in describe_exit_code(-9)


def test_in_flight_marks_only_held_attempts_lost() -> None:
    f = InFlight()
    f.add([("s.0", 1), ("s.1", 1)])
    f.discard([("s.1", 1)])
    assert f.mark_lost([("s.0", 1), ("s.1", 1)]) == 1
    assert f.take_lost() == [("s.0", 1)]
    assert f.take_lost() == []
    assert len(f) == 0


def test_settings_validate_and_ids_are_unique() -> None:
    with pytest.raises(InvalidInput):
        WorkerSettings(store_url="memory://", concurrency=0)
    assert default_worker_id() != default_worker_id()


@pytest.mark.parametrize("has_timeout", [False, True])
def test_an_executor_answers_a_run_of_short_tasks_in_one_message(has_timeout: bool) -> None:
    """Outcomes of short tasks are held and sent together, so the agent wakes once; not
    when the tasks have timeouts, whose clocks the agent must start on time."""
    ex = ExecutorProcess(get_context("spawn"), 0, None)
    try:
        assert ex.channel.receive(block=True) == [b""]  # started
        sleep = import_handler("time:sleep")
        works = [
            Work(f"s.{i}", 1, sleep, "pickle", pickle.dumps(0.004), has_timeout=has_timeout)
            for i in range(5)
        ]
        ex.send(encoder.encode(Batch(works)))
        first = ex.channel.receive(block=True)  # whatever arrived in the first message
        answered = len(first)
        while answered < 5:
            answered += len(ex.channel.receive(block=True))
        assert [outcome_decoder.decode(f).task_id for f in first][:1] == ["s.0"]
        if has_timeout:
            assert len(first) == 1  # the next task's clock starts when this one is answered
        else:
            assert len(first) >= 3  # ~4 ms tasks, held for up to HOLD_S together
    finally:
        ex.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc tuning is Linux-only")
def test_grid_processes_can_keep_freed_memory() -> None:
    code = (
        "from htcgrid.worker.malloc import keep_freed_memory; "
        "print(keep_freed_memory(), keep_freed_memory(limit_mb=64))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_held_outcome_is_sent_while_a_long_task_runs() -> None:
    """A short task queued before a long one: its outcome goes out after HOLD_S, not when
    the long task ends."""
    ex = ExecutorProcess(get_context("spawn"), 0, None)
    try:
        assert ex.channel.receive(block=True) == [b""]  # started
        sleep = import_handler("time:sleep")
        works = [
            Work(f"s.{i}", 1, sleep, "pickle", pickle.dumps(s)) for i, s in enumerate([0.001, 3.0])
        ]
        ex.send(encoder.encode(Batch(works)))
        first = ex.channel.receive(block=True)
        assert [outcome_decoder.decode(f).task_id for f in first] == ["s.0"]  # the long one runs
    finally:
        ex.kill()


def test_an_executor_with_tasks_queued_reads_what_the_agent_sends_meanwhile() -> None:
    """It reads its socket between tasks only when the agent's sent count moved: a skip
    and a batch sent while it runs a task still reach it before the next one starts."""
    ex = ExecutorProcess(get_context("spawn"), 0, None)
    try:
        assert ex.channel.receive(block=True) == [b""]  # started
        sleep = import_handler("time:sleep")
        works = [
            Work(f"s.{i}", 1, sleep, "pickle", pickle.dumps(s))
            for i, s in enumerate([0.3, 0.001, 0.001])
        ]
        ex.send(encoder.encode(Batch(works)))
        time.sleep(0.1)  # s.0 runs, s.1 and s.2 are queued in the executor
        ex.send(encoder.encode(Skip("s.1", 1)))
        ex.send(encoder.encode(Batch([Work("s.3", 1, sleep, "pickle", pickle.dumps(0.001))])))
        outcomes = []
        while len(outcomes) < 4:
            outcomes += [outcome_decoder.decode(f) for f in ex.channel.receive(block=True)]
        assert [(o.task_id, o.is_skipped) for o in outcomes] == [
            ("s.0", False),
            ("s.1", True),
            ("s.2", False),
            ("s.3", False),
        ]
    finally:
        ex.kill()


def slow_bytes(seconds: float) -> bytes:
    """A handler for the pool test below: a result too large to travel inline, a bit late."""
    time.sleep(seconds)
    return b"x" * 1000


def test_a_lost_attempt_that_finishes_anyway_hands_back_its_result_blob(tmp_path: Path) -> None:
    """The outcome of an attempt whose lease was lost while it ran is dropped. When its
    executor had stored the result as a blob, the pool hands that key back for the agent to
    delete: no task will ever name it."""
    pool = ExecutorPool("w", 1, None, 8, WorkerStats())
    pool.blobs = ExecutorBlobs(f"sqlite://{tmp_path / 'grid.db'}", inline_limit=10)
    wake_r, wake_w = os.pipe()
    pool.start()
    try:
        deadline = time.monotonic() + 60
        while not all(ex.is_ready for ex in pool._executors):  # else stop_lost skips it
            assert time.monotonic() < deadline, "the executor did not start"
            pool.gather(0.05, wake_r)
        handler = import_handler(f"{__name__}:slow_bytes")
        payload = pickle.dumps(0.1)  # no kill: this test never enforces the pool's deadlines
        lease = Lease(
            task_id="s.0",
            worker_id="w",
            attempt=1,
            lease_expiry=0.0,
            max_attempts=1,
            retry_backoff_s=0.0,
        )
        claim = Claim(
            lease=lease,
            session_id="s",
            handler=handler,
            codec=Codec.PICKLE,
            payload=payload,
            payload_ref=None,
            timeout_s=None,
        )
        pool.add([Attempt(claim, Work("s.0", 1, handler, "pickle", payload), None)])
        pool.dispatch()
        pool.stop_lost([("s.0", 1)])  # the store took the lease back while it runs
        dropped: list[str] = []
        while not dropped:
            assert time.monotonic() < deadline, "the lost attempt's outcome never came"
            pool.gather(0.05, wake_r)
            dropped = pool.take_dropped_results()
        key = output_blob_key("s.0", 1)
        assert dropped == [key]
        assert pool.take_finished() == [] and pool.stats.lost == 1
        stored = SqliteBackend.open_blobs(tmp_path / "grid.db").get(key)  # it got that far
        assert pickle.loads(stored) == b"x" * 1000
    finally:
        pool.close(graceful=False)
        os.close(wake_r)
        os.close(wake_w)
