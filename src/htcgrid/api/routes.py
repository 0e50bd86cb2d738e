"""The HTTP routes under /v1: thin, each one authenticates, decodes, and runs one service call
off the event loop.

Store calls block, so they run in worker threads: ordinary ones under one capacity limiter,
long-polls (``wait`` on the finished stream) under another, so clients parked on a long-poll
can never starve submits and reads of threads.
"""

from collections.abc import Callable
from importlib.metadata import version
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from htcgrid.api import openapi as doc
from htcgrid.api.auth import Principal
from htcgrid.api.body import decode, read_body, respond
from htcgrid.api.service import MAX_KEY_CHARS, Service
from htcgrid.api.settings import ApiSettings
from htcgrid.api.wire import (
    CancelIn,
    CancelOut,
    Health,
    Info,
    LookupIn,
    SessionIn,
    SessionList,
    SubmitIn,
    SubmitOut,
    TaskList,
    TaskPage,
)
from htcgrid.core.errors import Unauthorized
from htcgrid.core.model import Counts, SessionInfo

T = TypeVar("T")

#: Largest cursor accepted: done_seq values are 63-bit integers in every store.
MAX_CURSOR = 2**62


class Runtime:
    """Per-app state, made in the app's lifespan: the service and the thread limiters."""

    def __init__(self, settings: ApiSettings, service: Service) -> None:
        self.settings = settings
        self.service = service
        self.limits = settings.limits
        self._calls = anyio.CapacityLimiter(settings.store_threads)
        self._waits = anyio.CapacityLimiter(settings.limits.max_waiters)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a worker thread."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._calls)

    async def wait(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a long-poll in its own pool of threads."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._waits)


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


_bearer = HTTPBearer(
    auto_error=False,
    description="A token made by `htcgrid token create`: `Authorization: Bearer <token>`.",
)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its bearer token; Unauthorized (401) without a valid one. The token
    is compared by hash and never logged or echoed."""
    if credentials is None:
        raise Unauthorized("missing credentials: send the header 'Authorization: Bearer <token>'")
    who = runtime(request).settings.token_table().authenticate(credentials.credentials)
    if who is None:
        raise Unauthorized("the bearer token is not valid: unknown or revoked")
    return who


Who = Annotated[Principal, Depends(principal)]
SessionPath = Annotated[str, Path(pattern="^[A-Za-z0-9_-]{1,64}$", description="a session id")]
BlobPath = Annotated[str, Path(pattern="^[A-Za-z0-9_.-]{1,200}$", description="a blob name")]


def health_router() -> APIRouter:
    r = APIRouter(tags=["health"])

    @r.get("/healthz", response_class=Response, responses=doc.answers(200, Health, "alive", ()))
    async def healthz(request: Request) -> Response:
        """Liveness: the process serves requests (the store is not consulted)."""
        return respond(request, Health(status="ok"))

    @r.get("/readyz", response_class=Response, responses=doc.answers(200, Health, "ready", (503,)))
    async def readyz(request: Request) -> Response:
        """Readiness: the store answers a read."""
        rt = runtime(request)
        await rt.call(rt.service.probe)
        return respond(request, Health(status="ready"))

    return r


def v1_router(settings: ApiSettings) -> APIRouter:
    limits = settings.limits
    served_version = version("htcgrid")
    r = APIRouter(prefix="/v1")

    @r.get("/info", response_class=Response, responses=doc.answers(200, Info, "who", (401,)))
    async def info(request: Request, who: Who) -> Response:
        """The caller's tenant and role, and what this API accepts."""
        rt = runtime(request)
        durable = rt.service.store.capabilities.is_durable
        return respond(
            request,
            Info(
                version=served_version,
                tenant=who.tenant,
                role=who.role.value,
                is_durable=durable,
                limits=limits,
            ),
        )

    @r.post(
        "/sessions",
        status_code=201,
        response_class=Response,
        openapi_extra=doc.body(SessionIn),
        responses=doc.answers(201, SessionInfo, "the new session", (401, 413, 422, 503)),
        tags=["sessions"],
    )
    async def create_session(request: Request, who: Who) -> Response:
        """Open a session owned by the caller's tenant; its options are task defaults."""
        rt = runtime(request)
        body = decode(request, await read_body(request, limits.max_body_bytes), SessionIn)
        return respond(request, await rt.call(rt.service.create_session, who, body), 201)

    @r.get(
        "/sessions",
        response_class=Response,
        responses=doc.answers(200, SessionList, "sessions", (401, 503)),
        tags=["sessions"],
    )
    async def list_sessions(request: Request, who: Who) -> Response:
        """The caller's sessions with their counts (an admin's: every session)."""
        rt = runtime(request)
        return respond(request, await rt.call(rt.service.list_sessions, who))

    @r.get(
        "/sessions/{session_id}",
        response_class=Response,
        responses=doc.answers(200, SessionInfo, "the session"),
        tags=["sessions"],
    )
    async def get_session(request: Request, who: Who, session_id: SessionPath) -> Response:
        """One session with its counts per state."""
        rt = runtime(request)
        return respond(request, await rt.call(rt.service.session, who, session_id))

    @r.delete(
        "/sessions/{session_id}",
        status_code=204,
        response_class=Response,
        responses=doc.answers(204, None, "deleted"),
        tags=["sessions"],
    )
    async def delete_session(request: Request, who: Who, session_id: SessionPath) -> Response:
        """Delete a session with its tasks, results and blobs."""
        rt = runtime(request)
        await rt.call(rt.service.delete_session, who, session_id)
        return Response(status_code=204)

    @r.get(
        "/sessions/{session_id}/counts",
        response_class=Response,
        responses=doc.answers(200, Counts, "tasks per state"),
        tags=["sessions"],
    )
    async def counts(request: Request, who: Who, session_id: SessionPath) -> Response:
        """Tasks of the session per state."""
        rt = runtime(request)
        return respond(request, await rt.call(rt.service.counts, who, session_id))

    @r.post(
        "/sessions/{session_id}/tasks",
        response_class=Response,
        openapi_extra=doc.body(SubmitIn),
        responses=doc.answers(200, SubmitOut, "task ids", (401, 404, 413, 422, 503)),
        tags=["tasks"],
    )
    async def submit(
        request: Request,
        who: Who,
        session_id: SessionPath,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_CHARS)
        ] = None,
    ) -> Response:
        """Add a batch of tasks, all or none. With an Idempotency-Key, a batch retried under
        the same key (after a lost answer) returns the first ids and adds nothing."""
        rt = runtime(request)
        data = await read_body(request, limits.max_body_bytes)

        def decode_and_submit() -> SubmitOut:  # one thread hand-over, not two
            body = decode(request, data, SubmitIn)
            return rt.service.submit(who, session_id, body.tasks, idempotency_key)

        return respond(request, await rt.call(decode_and_submit))

    @r.get(
        "/sessions/{session_id}/finished",
        response_class=Response,
        responses=doc.answers(200, TaskPage, "a page of finished tasks"),
        tags=["tasks"],
    )
    async def finished(
        request: Request,
        who: Who,
        session_id: SessionPath,
        after: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="cursor")] = 0,
        limit: Annotated[int, Query(ge=1, le=limits.max_page)] = 1000,
        wait: Annotated[float, Query(ge=0, le=limits.max_wait_s, description="seconds")] = 0.0,
    ) -> Response:
        """Finished tasks in the order they finished, past the cursor ``after``. With ``wait``,
        an empty answer is held until a task finishes or ``wait`` seconds pass (long-poll)."""
        rt = runtime(request)

        def wait_and_read() -> TaskPage:  # the re-read right behind the wake-up, same thread
            rt.service.store.wait_for_finished(session_id, after, wait)
            return rt.service.page(session_id, after, limit)

        page = await rt.call(rt.service.finished, who, session_id, after, limit)
        if not page.tasks and wait > 0:
            page = await rt.wait(wait_and_read)
        return respond(request, page)

    @r.post(
        "/sessions/{session_id}/tasks/lookup",
        response_class=Response,
        openapi_extra=doc.body(LookupIn),
        responses=doc.answers(200, TaskList, "task records", (401, 404, 413, 422, 503)),
        tags=["tasks"],
    )
    async def lookup(request: Request, who: Who, session_id: SessionPath) -> Response:
        """Records of the given tasks of the session, in the given order."""
        rt = runtime(request)
        body = decode(request, await read_body(request, limits.max_body_bytes), LookupIn)
        return respond(request, await rt.call(rt.service.lookup, who, session_id, body.task_ids))

    @r.post(
        "/sessions/{session_id}/cancel",
        response_class=Response,
        openapi_extra=doc.body(CancelIn),
        responses=doc.answers(200, CancelOut, "how many were cancelled", (401, 404, 413, 422, 503)),
        tags=["tasks"],
    )
    async def cancel(request: Request, who: Who, session_id: SessionPath) -> Response:
        """Cancel the session (``task_ids`` null: also closed to new tasks) or some tasks.
        Finished tasks are untouched; cancelling again cancels nothing more."""
        rt = runtime(request)
        body = decode(request, await read_body(request, limits.max_body_bytes), CancelIn)
        return respond(request, await rt.call(rt.service.cancel, who, session_id, body.task_ids))

    @r.put(
        "/sessions/{session_id}/blobs/{name}",
        status_code=204,
        response_class=Response,
        openapi_extra=doc.binary_body(),
        responses=doc.answers(204, None, "stored", (401, 404, 413, 422, 503)),
        tags=["blobs"],
    )
    async def put_blob(
        request: Request, who: Who, session_id: SessionPath, name: BlobPath
    ) -> Response:
        """Upload a payload (or a shipped function) too large to travel inline."""
        rt = runtime(request)
        data = await read_body(request, limits.max_body_bytes)
        await rt.call(rt.service.put_blob, who, session_id, name, data)
        return Response(status_code=204)

    @r.get(
        "/sessions/{session_id}/blobs/{name}",
        response_class=Response,
        responses=doc.binary_answers(),
        tags=["blobs"],
    )
    async def get_blob(
        request: Request, who: Who, session_id: SessionPath, name: BlobPath
    ) -> Response:
        """Download a blob: a large payload or a result stored by reference."""
        rt = runtime(request)
        data = await rt.call(rt.service.get_blob, who, session_id, name)
        return Response(data, media_type="application/octet-stream")

    return r
