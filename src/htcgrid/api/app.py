"""``create_app(settings)``: the FastAPI application of one stateless API process.

Everything the app needs comes from :class:`ApiSettings`; the store is opened in the app's
lifespan (or given, already open) and the one error table of :mod:`htcgrid.api.errors` turns
every failure into a JSON body ``{"error", "message"}`` with the family's status code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from htcgrid.api import openapi
from htcgrid.api.body import json_response
from htcgrid.api.errors import error_body, status_of
from htcgrid.api.routes import Runtime, health_router, v1_router
from htcgrid.api.service import Service
from htcgrid.api.settings import ApiSettings
from htcgrid.api.wire import ErrorOut
from htcgrid.backends.base import ClientStore
from htcgrid.backends.registry import open_backend
from htcgrid.core.errors import BackendUnavailable, GridError, Unauthorized

log = logging.getLogger(__name__)

DESCRIPTION = """\
The control plane of an htcgrid grid: sessions of tasks, submitted in batches, results
streamed by cursor with long-poll, cancellation, blobs for large payloads. Every route under
/v1 needs `Authorization: Bearer <token>`; a tenant sees only its own sessions. Bodies are
JSON (bytes as base64) or msgpack (`Content-Type`/`Accept: application/msgpack`). Errors are
`{"error": "<GridError family>", "message": "<what to fix>"}`.
"""


def create_app(settings: ApiSettings) -> FastAPI:
    """The API application over the store ``settings`` name; nothing global, so tests and
    embedders can run several side by side."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store: ClientStore
        if settings.backend is not None:
            store = settings.backend
        else:
            assert settings.store_url is not None
            store = open_backend(settings.store_url)
        app.state.runtime = Runtime(
            settings, Service(store, settings.limits, settings.handler_kinds)
        )
        try:
            yield
        finally:
            if settings.backend is None:
                store.close()

    app = FastAPI(
        title="htcgrid",
        version=version("htcgrid"),
        description=DESCRIPTION,
        lifespan=lifespan,
        root_path=settings.root_path,
        docs_url="/docs",
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,
    )
    app.include_router(health_router())
    app.include_router(v1_router(settings))
    _handle_errors(app)
    openapi.install(app)
    return app


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(GridError)
    async def grid_error(request: Request, exc: GridError) -> Response:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="htcgrid"'
        elif isinstance(exc, BackendUnavailable):
            headers["Retry-After"] = "1"
            log.warning("%s %s: store unavailable: %s", request.method, request.url.path, exc)
        return json_response(error_body(exc), status, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(_describe(e) for e in exc.errors()) or "invalid request"
        return json_response(ErrorOut(error="InvalidInput", message=problems), 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        name = {404: "NotFound", 401: "Unauthorized"}.get(exc.status_code, "InvalidInput")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}: see /openapi.json"
        return json_response(ErrorOut(error=name, message=message), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = ErrorOut(error="GridError", message="internal error; the API log has the details")
        return json_response(body, 500)


def _describe(error: object) -> str:
    """One FastAPI/pydantic validation error as 'where: what' ("query limit: ...")."""
    if not isinstance(error, dict):
        return str(error)
    where = " ".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"
