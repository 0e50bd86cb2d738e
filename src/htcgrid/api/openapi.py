"""The OpenAPI document, with bodies described by the same msgspec Structs that decode them.

Routes read their bodies themselves (JSON or msgpack, size-limited), so FastAPI cannot see
their types; each route names its body and answers here, and :func:`install` merges the
schemas msgspec generates for :data:`htcgrid.api.wire.SCHEMA_TYPES` into the document.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from htcgrid.api.wire import JSON, MSGPACK, SCHEMA_TYPES, ErrorOut

_REF = "#/components/schemas/{name}"
_ERRORS = {
    401: "no or wrong bearer token",
    404: "no such session (or not the caller's)",
    413: "body, batch or payload over a limit",
    422: "malformed or invalid input; the message says what to fix",
    503: "the store is unreachable; retry later",
}


def ref(t: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=t.__name__)}


def body(t: type) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is a ``t``, in JSON or msgpack."""
    schema = ref(t)
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": schema}, MSGPACK: {"schema": schema}},
        }
    }


def binary_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    }


def answers(
    status: int, t: type | None, what: str, errors: tuple[int, ...] = (401, 404, 422, 503)
) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route answering ``status`` with a ``t`` (None: no body)."""
    ok: dict[str, Any] = {"description": what}
    if t is not None:
        ok["content"] = {JSON: {"schema": ref(t)}, MSGPACK: {"schema": ref(t)}}
    out: dict[int | str, dict[str, Any]] = {status: ok}
    for code in errors:
        out[code] = {"description": _ERRORS[code], "content": {JSON: {"schema": ref(ErrorOut)}}}
    return out


def binary_answers() -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route answering 200 with raw bytes."""
    out = answers(200, None, "the bytes", (401, 404, 422, 503))
    out[200]["content"] = {"application/octet-stream": {"schema": {"type": "string"}}}
    return out


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (served at /openapi.json) include the wire schemas."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=app.servers or None,
            )
            _, components = msgspec.json.schema_components(SCHEMA_TYPES, ref_template=_REF)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(components)
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
