"""Payloads and results come back byte for byte, inline or by blob reference."""

from __future__ import annotations

import pytest

from htcgrid.backends.base import Backend
from htcgrid.backends.registry import open_blob_store
from htcgrid.core.errors import NotFound
from htcgrid.core.model import Codec, NewTask
from htcgrid.core.states import TaskState

from .helpers import HANDLER, T0, TTL, open_session, succeed

BINARY = bytes(range(256)) * 3
PAYLOADS = {
    "empty": b"",
    "nul": b"\x00",
    "binary": BINARY,
    "utf8-looking": "r\u00e9sum\u00e9 \u2603".encode(),
    "large": b"\xab" * (64 * 1024),
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_inline_payload_and_result_round_trip(backend: Backend, payload: bytes) -> None:
    open_session(backend, "s")
    [tid] = backend.submit("s", [NewTask(handler=HANDLER, codec=Codec.RAW, payload=payload)], T0)
    [c] = backend.claim("w", 1, TTL, T0)
    assert type(c.payload) is bytes
    assert c.payload == payload
    backend.complete([succeed(c, payload)], T0)
    [record] = backend.tasks([tid])
    assert type(record.result) is bytes
    assert record.result == payload
    assert backend.finished("s", 0, 1)[0].result == payload


def test_references_round_trip(backend: Backend) -> None:
    open_session(backend, "s")
    backend.blobs.put("s/input-1", BINARY)
    task = NewTask(handler="pickle:s/handler-1", payload=None, payload_ref="s/input-1")
    [tid] = backend.submit("s", [task], T0)
    [c] = backend.claim("w", 1, TTL, T0)
    assert (c.payload, c.payload_ref, c.handler) == (None, "s/input-1", "pickle:s/handler-1")
    assert backend.blobs.get("s/input-1") == BINARY
    backend.complete([succeed(c, None, "s/output-1")], T0)
    [record] = backend.tasks([tid])
    assert (record.result, record.result_ref) == (None, "s/output-1")


def test_a_none_result_stays_none(backend: Backend) -> None:
    [tid] = open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([succeed(c, None)], T0)
    [record] = backend.tasks([tid])
    assert record.state is TaskState.SUCCEEDED
    assert (record.result, record.result_ref) == (None, None)


@pytest.mark.parametrize("codec", list(Codec))
def test_codec_and_handler_are_kept(backend: Backend, codec: Codec) -> None:
    open_session(backend, "s")
    handler = 'command:["echo", "-n"]'
    [tid] = backend.submit("s", [NewTask(handler=handler, codec=codec, payload=b"x")], T0)
    [c] = backend.claim("w", 1, TTL, T0)
    assert (c.codec, c.handler) == (codec, handler)
    assert backend.tasks([tid])[0].codec is codec


def test_many_payloads_keep_their_order(backend: Backend) -> None:
    open_session(backend, "s")
    tasks = [NewTask(handler=HANDLER, payload=i.to_bytes(4, "big")) for i in range(500)]
    ids = backend.submit("s", tasks, T0)
    claims = backend.claim("w", 500, TTL, T0)
    assert [c.task_id for c in claims] == ids
    assert [c.payload for c in claims] == [t.payload for t in tasks]


def test_the_blob_store_opened_alone_from_the_url_holds_the_same_blobs(
    backend: Backend,
) -> None:
    """What a worker's executors open to read large inputs and write large results."""
    alone = open_blob_store(backend.url)
    if not backend.capabilities.is_shared:
        assert alone is None  # no other process can reach these blobs
        return
    assert alone is not None
    open_session(backend, "s")
    backend.blobs.put("s/input-1", BINARY)
    assert alone.get("s/input-1") == BINARY
    alone.put("s/output-1", b"from an executor")
    assert backend.blobs.get("s/output-1") == b"from an executor"
    backend.delete_session("s")  # the session's blobs go with it, whoever wrote them
    with pytest.raises(NotFound):
        alone.get("s/output-1")


def test_discard_deletes_only_the_named_blobs(backend: Backend) -> None:
    open_session(backend, "s")
    open_session(backend, "t")
    backend.blobs.put("s/input-1", BINARY)
    backend.blobs.put("s/input-2", b"kept")
    backend.blobs.put("t/input-1", b"other session")
    backend.blobs.discard(["s/input-1", "s/never-written"])
    with pytest.raises(NotFound):
        backend.blobs.get("s/input-1")
    assert backend.blobs.get("s/input-2") == b"kept"
    assert backend.blobs.get("t/input-1") == b"other session"
    backend.blobs.discard([])  # nothing to do is fine
    backend.delete_session("s")  # the session still deletes cleanly
    with pytest.raises(NotFound):
        backend.blobs.get("s/input-2")
