"""The client against a real embedded grid: real worker processes, a real SQLite file."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

import htcgrid
from htcgrid import RemoteTraceback, TaskCancelled, TaskState
from tests.integration import handlers


def test_map_returns_results_in_input_order(grid: htcgrid.Grid) -> None:
    with grid.session() as session:
        assert list(session.map(handlers.square, range(500), window=64)) == [
            x * x for x in range(500)
        ]
        assert session.counts().succeeded == 500


def test_shipped_function_runs_on_workers(grid: htcgrid.Grid) -> None:
    offset = 7

    def add_offset(x: int) -> int:  # a closure: not importable, shipped with cloudpickle
        return x + offset

    with grid.session() as session:
        assert [f.result(timeout=30) for f in session.submit_many(add_offset, [1, 2, 3])] == [
            8,
            9,
            10,
        ]


def test_remote_exception_is_reraised_with_type_message_and_traceback(
    grid: htcgrid.Grid,
) -> None:
    with grid.session(max_attempts=2) as session:
        future = session.submit(handlers.fail_pricing, "swap-42")
        with pytest.raises(handlers.PricingError) as raised:
            future.result(timeout=30)
        assert raised.value.trade == "swap-42"
        assert "negative volatility" in str(raised.value)
        cause = raised.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "fail_pricing" in cause.tb
        [record] = grid.backend.tasks([future.task_id])
        assert record.state is TaskState.FAILED
        assert record.n_errors == 2


def test_executor_submit_and_map_spread_arguments(grid: htcgrid.Grid) -> None:
    with grid.executor() as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        assert pool.submit(handlers.add, 2, 3, scale=10).result(timeout=30) == 50
        assert list(pool.map(handlers.add, [1, 2], [10, 20])) == [11, 22]


def test_large_payloads_go_through_the_blob_store(grid: htcgrid.Grid) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, far above the inline limit
    with grid.session() as session:
        assert session.submit(handlers.echo, data).result(timeout=30) == data


def test_wait_says_exactly_what_is_unfinished(grid: htcgrid.Grid) -> None:
    with grid.session() as session:
        quick = session.submit(handlers.square, 3)
        slow = session.submit(handlers.sleep_s, 2.0)
        assert quick.result(timeout=30) == 9
        waited = session.wait(timeout=0.2)
        assert not waited.is_done
        assert waited.unfinished == [slow.task_id]
        assert waited.counts.succeeded == 1
        done = session.wait(timeout=30)
        assert done.is_done and done.unfinished == []


def test_cancel_stops_pending_and_running_tasks_and_keeps_finished_ones(
    grid: htcgrid.Grid,
) -> None:
    with grid.session() as session:
        finished = session.submit(handlers.square, 4)
        assert finished.result(timeout=30) == 16
        sleepers = session.submit_many(handlers.sleep_s, [30.0] * 4)
        deadline = time.monotonic() + 20
        while session.counts().running == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.cancel() == 4
        for f in sleepers:
            with pytest.raises(TaskCancelled):
                f.result(timeout=30)
        counts = session.counts()
        assert (counts.succeeded, counts.cancelled, counts.running) == (1, 4, 0)
        with pytest.raises(htcgrid.InvalidInput, match="cancelled"):
            session.submit(handlers.square, 1)


def test_results_stream_every_finished_task(grid: htcgrid.Grid) -> None:
    with grid.session() as session:
        session.submit_many(handlers.square, range(50))
        values = sorted(r.value for r in session.results(timeout=60))
        assert values == sorted(x * x for x in range(50))


def test_attach_finds_a_session_by_id(grid: htcgrid.Grid) -> None:
    with grid.session(name="keep") as session:
        tid = session.submit(handlers.square, 5).task_id
        session.wait(timeout=30)
    again = grid.attach(session.session_id)
    [result] = again.get([tid])
    assert result is not None and result.value == 25


def test_bad_input_is_refused_at_the_edge_and_changes_nothing(grid: htcgrid.Grid) -> None:
    with pytest.raises(htcgrid.InvalidInput, match="max_attempts"):
        grid.session(max_attempts=0)
    with grid.session() as session:
        with pytest.raises(htcgrid.InvalidInput, match=r"package\.module:function"):
            session.submit("not a handler", 1)
        with pytest.raises(htcgrid.InvalidInput, match="handler must be"):
            session.submit(42, 1)  # type: ignore[arg-type]
        assert session.counts().total == 0
    with grid.session(codec="msgpack") as session:
        with pytest.raises(htcgrid.InvalidInput, match="msgpack"):
            session.submit_many(handlers.square, [1, object()])
        assert session.counts().total == 0
