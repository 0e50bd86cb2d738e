"""Request bodies in, response bodies out: JSON or msgpack, size-limited, strictly typed.

Bodies are read before anything is decoded and refused as soon as they pass the limit, so an
oversized request costs the server at most the limit in memory. Decoding goes straight into
the wire Structs, which refuse unknown fields and wrong types with a message naming the
field (``Expected `int`, got `str` - at `$.tasks[0].timeout_s```).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from htcgrid.api.wire import JSON, MSGPACK
from htcgrid.core.errors import InvalidInput, PayloadTooLarge

T = TypeVar("T")

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or PayloadTooLarge as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {int(declared):,} bytes is over the {limit:,}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", JSON).partition(";")[0].strip().lower()


def decode(request: Request, data: bytes, into: type[T]) -> T:
    """Decode ``data`` by the request's Content-Type into ``into``; InvalidInput saying what
    to fix when it is malformed, of the wrong shape, or of an unsupported media type."""
    kind = media_type(request)
    try:
        if kind == MSGPACK:
            return msgspec.msgpack.decode(data, type=into)
        if kind in (JSON, "") or kind.endswith("+json"):
            return msgspec.json.decode(data, type=into)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        fmt = "msgpack" if kind == MSGPACK else "JSON"
        raise InvalidInput(f"request body is not valid {fmt}: {exc}") from None
    raise InvalidInput(f"unsupported Content-Type {kind!r}: send {JSON} or {MSGPACK}")


def wants_msgpack(request: Request) -> bool:
    return MSGPACK in request.headers.get("accept", "")


def respond(request: Request, value: Any, status: int = 200) -> Response:
    """``value`` as msgpack when the client accepts it, else as JSON."""
    if wants_msgpack(request):
        return Response(_msgpack.encode(value), status, media_type=MSGPACK)
    return Response(_json.encode(value), status, media_type=JSON)


def json_response(value: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """Always JSON: error bodies are read by people and curl as often as by the client."""
    return Response(_json.encode(value), status, headers=headers, media_type=JSON)
