"""The remote client through the HTTP API to a real embedded grid: the same Grid and Session
API as direct mode, the same ids, the same exceptions, re-raised with remote tracebacks."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import pytest

import htcgrid
from htcgrid import EmbeddedGrid, RemoteTraceback, TaskCancelled, TaskState
from htcgrid.api import ApiSettings
from htcgrid.api.serve import ApiThread, Listen
from htcgrid.client.http import HttpStore
from tests.api.conftest import TOKEN_A, TOKENS
from tests.integration import handlers

pytestmark = pytest.mark.e2e


def test_map_returns_results_in_order_with_direct_mode_ids(remote: htcgrid.Grid) -> None:
    assert isinstance(remote.backend, HttpStore)
    with remote.session(name="map") as session:
        assert re.fullmatch(r"s[0-9a-f]{24}", session.session_id)
        assert list(session.map(handlers.square, range(300), window=64)) == [
            x * x for x in range(300)
        ]
        assert session.counts().succeeded == 300
        info = session.info()
        assert info.spec.tenant == "desk-a" and info.spec.name == "map"


def test_submit_and_as_completed(remote: htcgrid.Grid) -> None:
    with remote.session() as session:
        futures = session.submit_many(handlers.square, range(50))
        assert [f.task_id for f in futures] == [f"{session.session_id}.{i}" for i in range(50)]
        done = {f.task_id: f.result() for f in session.as_completed(futures, timeout=60)}
        assert done == {f"{session.session_id}.{i}": i * i for i in range(50)}


def test_shipped_closure_and_large_payloads_travel_through_blobs(remote: htcgrid.Grid) -> None:
    offset = 7

    def add_offset(x: int) -> int:  # a closure: cloudpickled, uploaded as a blob
        return x + offset

    data = bytes(range(256)) * 2048  # 512 KiB: above the inline limit both ways
    with remote.session() as session:
        assert [f.result(timeout=60) for f in session.submit_many(add_offset, [1, 2])] == [8, 9]
        assert session.submit(handlers.echo, data).result(timeout=60) == data


def test_remote_exception_is_reraised_with_its_class_and_traceback(remote: htcgrid.Grid) -> None:
    with remote.session(max_attempts=2) as session:
        future = session.submit(handlers.fail_pricing, "swap-42")
        with pytest.raises(handlers.PricingError) as raised:
            future.result(timeout=60)
        assert raised.value.trade == "swap-42"
        cause = raised.value.__cause__
        assert isinstance(cause, RemoteTraceback) and "fail_pricing" in cause.tb
        [record] = remote.backend.tasks([future.task_id])
        assert record.state is TaskState.FAILED and record.n_errors == 2


def test_executor_submit_and_map(remote: htcgrid.Grid) -> None:
    with remote.executor() as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        assert pool.submit(handlers.add, 2, 3, scale=10).result(timeout=60) == 50
        assert list(pool.map(handlers.add, [1, 2], [10, 20])) == [11, 22]


def test_wait_long_polls_and_names_what_is_unfinished(remote: htcgrid.Grid) -> None:
    with remote.session() as session:
        quick = session.submit(handlers.square, 3)
        slow = session.submit(handlers.sleep_s, 1.5)
        assert quick.result(timeout=60) == 9
        waited = session.wait(timeout=0.2)
        assert not waited.is_done and waited.unfinished == [slow.task_id]
        assert session.wait(timeout=60).is_done


def test_cancel_stops_pending_and_running_and_keeps_finished(remote: htcgrid.Grid) -> None:
    with remote.session() as session:
        done = session.submit(handlers.square, 4)
        assert done.result(timeout=60) == 16
        sleepers = session.submit_many(handlers.sleep_s, [30.0] * 4)
        time.sleep(0.5)
        assert session.cancel() == 4
        for f in sleepers:
            with pytest.raises(TaskCancelled):
                f.result(timeout=60)
        assert session.counts().cancelled == 4 and session.counts().succeeded == 1
        with pytest.raises(htcgrid.InvalidInput):
            session.submit(handlers.square, 1)  # a cancelled session takes no new task


def test_results_stream_page_by_page_and_attach_and_get(remote: htcgrid.Grid) -> None:
    with remote.session() as session:
        ids = [f.task_id for f in session.submit_many(handlers.square, range(120))]
        seen = [r.task_id for r in session.results(timeout=60, page=25)]
        assert sorted(seen) == sorted(ids)
        again = remote.attach(session.session_id)
        got = again.get([ids[0], ids[-1]])
        assert [r.value if r else None for r in got] == [0, 119 * 119]
        again.close()
    assert session.session_id in {s.session_id for s in remote.sessions()}
    remote.delete_session(session.session_id)
    with pytest.raises(htcgrid.NotFound):
        remote.attach(session.session_id)


def test_the_client_rides_out_an_api_restart(embedded: EmbeddedGrid) -> None:
    """Stop the API and bring another up on the same port a second later: the keyed submit
    and the reads in between are retried until it answers."""
    settings = ApiSettings(store_url=embedded.url, tokens=TOKENS)
    first = ApiThread(settings, Listen(port=0)).start()
    replacement: list[ApiThread] = []

    def restart() -> None:
        time.sleep(1.0)
        replacement.append(ApiThread(settings, Listen(port=first.port)).start())

    with htcgrid.connect(first.url, token=TOKEN_A) as g, g.session() as session:
        assert session.submit(handlers.square, 2).result(timeout=60) == 4
        first.stop()
        restarter = threading.Thread(target=restart)
        restarter.start()
        try:
            assert session.submit(handlers.square, 5).result(timeout=60) == 25
            assert session.counts().succeeded == 2
        finally:
            restarter.join()
            for api in replacement:
                api.stop()
