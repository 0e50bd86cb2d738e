"""Stateless API processes: ``htcgrid api`` started twice (once with two uvicorn workers) on
one SQLite store behaves as one API, and its access log holds no token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import htcgrid
from htcgrid import EmbeddedGrid
from tests.api.conftest import (
    TOKEN_A,
    TOKEN_B,
    bearer,
    free_port,
    start_api,
    stop,
    wait_ready,
    write_tokens,
)
from tests.integration import handlers

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replicas(
    embedded: EmbeddedGrid, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two API processes on the embedded grid's store (the second with two uvicorn worker
    processes); yields their URLs."""
    tokens = write_tokens(tmp_path_factory.mktemp("api") / "tokens.toml")
    ports = [free_port(), free_port()]
    procs = [
        start_api("--store", embedded.url, "--port", str(ports[0]), "--tokens", str(tokens)),
        start_api(
            "--store",
            embedded.url,
            "--port",
            str(ports[1]),
            "--tokens",
            str(tokens),
            "--workers",
            "2",
        ),
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            wait_ready(url, proc)
        yield urls
    finally:
        for p in procs:
            stop(p)


def test_two_api_processes_on_one_store_behave_as_one(
    replicas: list[str],
) -> None:
    one, two = replicas
    with htcgrid.connect(one, token=TOKEN_A) as a1, htcgrid.connect(two, token=TOKEN_A) as a2:
        session = a1.session(name="replicated")
        futures = session.submit_many(handlers.square, range(200))
        seen_by_two = a2.attach(session.session_id)
        results = {r.task_id: r.value for r in seen_by_two.results(timeout=60)}
        assert results == {f.task_id: i * i for i, f in enumerate(futures)}
        assert [f.result(timeout=60) for f in futures[:3]] == [0, 1, 4]
        assert session.session_id in {s.session_id for s in a2.sessions()}
        seen_by_two.close()
        a2.delete_session(session.session_id)
        with pytest.raises(htcgrid.NotFound):
            a1.attach(session.session_id)


def test_a_batch_retried_on_another_replica_is_not_added_twice(
    replicas: list[str],
) -> None:
    one, two = replicas
    created = httpx.post(f"{one}/v1/sessions", json={}, headers=bearer(TOKEN_B)).json()
    sid = created["session_id"]
    body = {"tasks": [{"handler": "import:htcgrid.workloads:noop", "payload": "gAROLg=="}] * 3}
    headers = bearer(TOKEN_B) | {"Idempotency-Key": "retry-me"}
    first = httpx.post(f"{one}/v1/sessions/{sid}/tasks", json=body, headers=headers)
    retry = httpx.post(f"{two}/v1/sessions/{sid}/tasks", json=body, headers=headers)
    assert first.json() == retry.json()
    counts = httpx.get(f"{two}/v1/sessions/{sid}/counts", headers=bearer(TOKEN_B)).json()
    assert sum(counts.values()) == 3
    # the other tenant is refused by both replicas alike
    for url in (one, two):
        assert httpx.get(f"{url}/v1/sessions/{sid}", headers=bearer(TOKEN_A)).status_code == 404


def test_long_polls_on_one_replica_wake_for_completions_through_the_other(
    replicas: list[str],
) -> None:
    one, two = replicas
    with htcgrid.connect(one, token=TOKEN_A) as a1, htcgrid.connect(two, token=TOKEN_A) as a2:
        session = a1.session()
        waiter = a2.attach(session.session_id)
        started = time.monotonic()
        session.submit(handlers.sleep_s, 0.5)
        a2.backend.wait_for_finished(session.session_id, 0, 20.0)
        assert time.monotonic() - started < 10
        assert [r.value for r in waiter.results(timeout=30)] == [0.5]
        waiter.close()


def test_the_access_log_holds_no_token(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.toml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_api("--store", "memory://", "--port", str(port), "--tokens", str(tokens))
    secret = "htc_wrong-token-that-must-stay-secret"
    try:
        wait_ready(url, proc)
        r = httpx.get(f"{url}/v1/sessions", headers=bearer(secret))
        assert r.status_code == 401 and secret not in r.text
        assert httpx.get(f"{url}/v1/info", headers=bearer(TOKEN_A)).status_code == 200
    finally:
        log = stop(proc)
    assert 'GET /v1/sessions HTTP/1.1" 401' in log, log[-2000:]
    assert 'GET /v1/info HTTP/1.1" 200' in log
    assert secret not in log and TOKEN_A not in log
