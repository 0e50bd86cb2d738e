"""Bad input at the edge: a 4xx with a JSON message saying what to fix, and nothing written.
Also the one error table, both ways: the client raises the classes the server mapped."""

from __future__ import annotations

import base64
import http.client
import http.server
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

import htcgrid
from htcgrid.api.errors import STATUS, error_body, error_from, status_of
from htcgrid.api.serve import ApiThread
from htcgrid.client.http import HttpStore
from htcgrid.core import errors
from tests.api.conftest import LIMITS, TOKEN_A
from tests.api.relay import answer, pass_on

NOOP = "import:htcgrid.workloads:noop"
ONE = base64.b64encode(msgspec.msgpack.encode(1)).decode()


def task(**overrides: Any) -> dict[str, Any]:
    return {"handler": NOOP, "codec": "msgpack", "payload": ONE} | overrides


@pytest.fixture
def sid(http: httpx.Client) -> str:
    r = http.post("/v1/sessions", json={})
    assert r.status_code == 201
    value: str = r.json()["session_id"]
    return value


def assert_rejected(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"}
    for w in words:
        assert w in body["message"], body["message"]


BAD_BATCHES = [
    # (body, status, words in the message)
    ({"tasks": [task(), task(handler="shell:rm -rf /")]}, 422, ["tasks[1].handler", "import"]),
    ({"tasks": [task(), task(handler="import:not a path")]}, 422, ["tasks[1].handler"]),
    ({"tasks": [task(), task(codec="yaml")]}, 422, ["codec", "$.tasks[1]"]),
    ({"tasks": [task(), task(extra=1)]}, 422, ["unknown field `extra`"]),
    ({"tasks": [task(), task(timeout_s="soon")]}, 422, ["Expected `float | null`", "timeout_s"]),
    ({"tasks": [task(), task(timeout_s=-1)]}, 422, ["timeout_s"]),
    ({"tasks": [task(), task(payload="not base64!")]}, 422, ["base64", "payload"]),
    ({"tasks": [task(), task(payload=None)]}, 422, ["tasks[1]", "payload"]),
    ({"tasks": [task(), task(payload=None, payload_ref="sOTHER/input-1")]}, 422, ["not in"]),
    ({"tasks": [task(), task(payload_ref="sOTHER/input-1")]}, 422, ["not both"]),
    ({"tasks": [task(), task(handler="pickle:sOTHER/handler-1")]}, 422, ["not in session"]),
    ({"tasks": []}, 422, ["at least one task"]),
    ({"tasks": [task()] * (LIMITS.max_batch_tasks + 1)}, 413, ["split it"]),
    ({"tasks": [task(), task(payload=base64.b64encode(b"x" * 5000).decode())]}, 413, ["blob"]),
    ({"task": [task()]}, 422, ["unknown field `task`"]),
    ([task()], 422, ["Expected `object`, got `array`"]),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_BATCHES)
def test_a_bad_batch_is_rejected_whole_with_what_to_fix(
    http: httpx.Client, sid: str, body: Any, status: int, words: list[str]
) -> None:
    r = http.post(f"/v1/sessions/{sid}/tasks", json=body)
    assert_rejected(r, status, *words)
    assert http.get(f"/v1/sessions/{sid}/counts").json()["pending"] == 0  # nothing half-written


def test_malformed_json_and_unsupported_media_types(http: httpx.Client, sid: str) -> None:
    path = f"/v1/sessions/{sid}/tasks"
    headers = {"Content-Type": "application/json"}
    assert_rejected(http.post(path, content=b'{"tasks": [', headers=headers), 422, "not valid JSON")
    bad = {"Content-Type": "application/msgpack"}
    assert_rejected(http.post(path, content=b"\xc1", headers=bad), 422, "not valid msgpack")
    xml = {"Content-Type": "application/xml"}
    assert_rejected(http.post(path, content=b"<tasks/>", headers=xml), 422, "Content-Type")


def test_a_body_over_the_limit_is_413_before_it_is_read(http: httpx.Client, sid: str) -> None:
    big = b"x" * (LIMITS.max_body_bytes + 1)
    assert_rejected(http.put(f"/v1/sessions/{sid}/blobs/input-1", content=big), 413, "limit")

    def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(LIMITS.max_body_bytes // 65536 + 2):
            yield b"y" * 65536

    assert_rejected(http.post(f"/v1/sessions/{sid}/tasks", content=chunks()), 413, "limit")
    assert http.get(f"/v1/sessions/{sid}/counts").json()["pending"] == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"max_attempts": 0}, ["max_attempts", ">= 1"]),
        ({"priority": "high"}, ["priority"]),
        ({"timeout_s": 0}, ["timeout_s"]),
        ({"retry_backoff_s": -1}, ["retry_backoff_s"]),
        ({"session_id": "no spaces please"}, ["session_id"]),
        ({"colour": "blue"}, ["unknown field `colour`"]),
        ({"name": 3}, ["Expected `str`"]),
    ],
)
def test_bad_session_options_are_422(http: httpx.Client, body: Any, words: list[str]) -> None:
    before = len(http.get("/v1/sessions").json()["sessions"])
    assert_rejected(http.post("/v1/sessions", json=body), 422, *words)
    assert len(http.get("/v1/sessions").json()["sessions"]) == before


def test_bad_queries_and_paths_are_4xx(http: httpx.Client, sid: str) -> None:
    finished = f"/v1/sessions/{sid}/finished"
    assert_rejected(http.get(finished, params={"limit": 0}), 422, "limit")
    assert_rejected(http.get(finished, params={"after": -1}), 422, "after")
    assert_rejected(http.get(finished, params={"wait": 3600}), 422, "wait")
    assert_rejected(http.get(finished, params={"limit": "many"}), 422, "limit")
    assert_rejected(http.get("/v1/sessions/bad%20id"), 422, "session_id")
    assert_rejected(http.get("/v1/nothing-here"), 404, "no route")
    assert_rejected(http.get(f"/v1/sessions/{sid}/blobs/nothing"), 404, "no blob")
    lookup = f"/v1/sessions/{sid}/tasks/lookup"
    assert_rejected(http.post(lookup, json={"task_ids": ["sOTHER.0"]}), 422, "not in session")
    assert_rejected(http.post(lookup, json={"task_ids": [f"{sid}.x"]}), 422, "malformed task id")
    cancel = f"/v1/sessions/{sid}/cancel"
    assert_rejected(http.post(cancel, json={"task_ids": "all"}), 422, "Expected `array")


def test_an_idempotent_retry_adds_no_task(http: httpx.Client, sid: str) -> None:
    path = f"/v1/sessions/{sid}/tasks"
    key = {"Idempotency-Key": "batch-0001"}
    first = http.post(path, json={"tasks": [task(), task()]}, headers=key)
    again = http.post(path, json={"tasks": [task(), task()]}, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"task_ids": [f"{sid}.0", f"{sid}.1"]}
    other = http.post(path, json={"tasks": [task()]}, headers={"Idempotency-Key": "batch-0002"})
    assert other.json() == {"task_ids": [f"{sid}.2"]}
    assert_rejected(http.post(path, json={"tasks": [task()]}, headers=key), 422, "new key")
    assert http.get(f"/v1/sessions/{sid}/counts").json()["pending"] == 3


def test_msgpack_bodies_and_answers(http: httpx.Client, sid: str) -> None:
    body = msgspec.msgpack.encode({"tasks": [task(payload=msgspec.msgpack.encode(7))]})
    headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    r = http.post(f"/v1/sessions/{sid}/tasks", content=body, headers=headers)
    assert r.headers["content-type"] == "application/msgpack"
    assert msgspec.msgpack.decode(r.content) == {"task_ids": [f"{sid}.0"]}


def test_the_remote_client_raises_the_same_classes(memory_api: ApiThread) -> None:
    with htcgrid.connect(memory_api.url, token=TOKEN_A) as grid:
        with pytest.raises(htcgrid.NotFound):
            grid.attach("s" + "0" * 24)
        with pytest.raises(htcgrid.InvalidInput, match="max_attempts"):
            grid.session(max_attempts=0)
        session = grid.session()
        with pytest.raises(htcgrid.InvalidInput, match="already exists"):
            grid.session(session_id=session.session_id)
        with pytest.raises(htcgrid.PayloadTooLarge):
            grid.backend.blobs.put(f"{session.session_id}/big", b"x" * 300_000)
        with pytest.raises(htcgrid.InvalidInput, match="new key"):
            tasks = [htcgrid.core.model.NewTask(handler=NOOP, payload=b"\x01")]
            grid.backend.submit(session.session_id, tasks, 0, batch_key="k")
            grid.backend.submit(session.session_id, tasks * 2, 0, batch_key="k")


@pytest.mark.parametrize("cls", [*STATUS, errors.GridError, errors.TaskError])
def test_the_error_table_maps_every_family_both_ways(cls: type[errors.GridError]) -> None:
    exc = cls("t.0", "E", "boom", "") if cls is errors.TaskError else cls("boom")
    body = msgspec.json.encode(error_body(exc))
    back = error_from(status_of(exc), body)
    family = next(c for c in cls.__mro__ if c in STATUS or c is errors.GridError)
    assert type(back) is family
    assert error_from(502, b"<html>bad gateway</html>").__class__ is errors.BackendUnavailable


class _FlakyProxy(http.server.ThreadingHTTPServer):
    """A real HTTP server in front of the API that answers the next ``failures`` requests
    with 503 itself and passes the others on."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.failures = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _FlakyProxy
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.failures > 0:
            self.server.failures -= 1
            down = b'{"error":"BackendUnavailable","message":"down"}'
            answer(self, 503, "application/json", down)
        else:
            upstream = self.server.upstream
            pass_on(self, upstream.hostname or "", upstream.port, self.path, body)

    do_GET = do_POST = do_PUT = do_DELETE = _relay

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def test_transient_503s_are_retried_for_safe_calls_only(memory_api: ApiThread) -> None:
    proxy = _FlakyProxy(memory_api.url)
    store = HttpStore(proxy.url, TOKEN_A, patience_s=10)
    try:
        proxy.failures = 1
        with pytest.raises(htcgrid.BackendUnavailable, match="down"):  # not safe to repeat
            store.create_session("s-transient", htcgrid.SessionSpec(), 0)
        store.create_session("s-transient", htcgrid.SessionSpec(), 0)
        proxy.failures = 3
        assert store.get_session("s-transient").session_id == "s-transient"  # a read: retried
        proxy.failures = 2
        tasks = [htcgrid.core.model.NewTask(handler=NOOP, payload=b"\x01")]
        assert store.submit("s-transient", tasks, 0, batch_key="b1") == ["s-transient.0"]
        assert proxy.failures == 0 and store.counts("s-transient").pending == 1
    finally:
        store.close()
        proxy.shutdown()
        proxy.server_close()
