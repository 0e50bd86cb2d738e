"""The remote store: :class:`~htcgrid.backends.base.ClientStore` over the HTTP API.

``htcgrid.connect("https://grid:8765", token=...)`` gives :class:`~htcgrid.client.Grid` an
:class:`HttpStore`, so sessions, futures, the executor and ``results()`` work unchanged,
with the same session and task ids as in direct mode. One urllib3 connection pool (keep-alive)
carries every call, through the proxy that ``HTTP_PROXY`` / ``HTTPS_PROXY`` name unless
``NO_PROXY`` exempts the host; bodies are msgpack. (urllib3 rather than httpx: a request costs
a quarter of a millisecond less, a tenth of a lone task's round trip.) Error responses become
the grid's own exception classes (:mod:`htcgrid.api.errors`), so callers catch the same
classes on either side.

Transient failures (connection errors, 502/503/504) are retried with capped backoff for calls
that are safe to repeat: reads, batch-keyed submits, cancels, blob uploads. Past the patience
the call raises :class:`BackendUnavailable`, which :class:`~htcgrid.client.Session` already
rides out for its own retried calls.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import msgspec
import urllib3
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as TransportError

from htcgrid.api.errors import TRANSIENT_STATUS, error_from
from htcgrid.api.wire import (
    MSGPACK,
    CancelIn,
    CancelOut,
    Info,
    LookupIn,
    SessionIn,
    SessionList,
    SubmitOut,
    TaskList,
    TaskPage,
)
from htcgrid.backends.base import Capabilities
from htcgrid.backends.blobs import BlobStore, split_blob_key
from htcgrid.core.errors import BackendUnavailable, InvalidInput, NotFound, Unauthorized
from htcgrid.core.model import Counts, NewTask, SessionInfo, SessionSpec, TaskRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable holding the bearer token when none is passed.
TOKEN_ENV = "HTCGRID_TOKEN"
#: How long one call keeps retrying transient failures before raising BackendUnavailable.
DEFAULT_PATIENCE_S = 15.0
#: Finished tasks fetched per page (and prefetched by a long-poll that ends with news).
PAGE = 2000
#: Share of the server's body limit one submit request fills, leaving room for framing.
_BODY_SHARE = 0.8
_encoder = msgspec.msgpack.Encoder()
#: Failures before the request left, safe to retry for any call: urllib3 counts refused and
#: unresolved connections among its connect timeouts.
_NOT_SENT = (ConnectTimeoutError,)
_CONNECT_TIMEOUT_S = 10.0


class HttpStore:
    """A grid's client operations over its HTTP API. Thread-safe: a session's collector
    thread and the caller share it. ``verify``: True (system CAs), False, a CA bundle path
    (a private CA or a self-signed certificate) or an :class:`ssl.SSLContext`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        verify: bool | str | ssl.SSLContext = True,
        timeout_s: float = 30.0,
        patience_s: float = DEFAULT_PATIENCE_S,
    ) -> None:
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise Unauthorized(f"no API token: pass token=... or set ${TOKEN_ENV}")
        self._url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        self._headers = {"Authorization": f"Bearer {token}", "Accept": MSGPACK}
        self._base_path = urlsplit(self._url).path  # an API served under a path prefix
        self._http, self._origin = _connections(self._url, verify, timeout_s)
        self._prefetched: dict[tuple[str, int], list[TaskRecord]] = {}
        self._lock = threading.Lock()
        self._blobs = HttpBlobStore(self)
        try:
            self.info = self._call("GET", "/v1/info", Info, is_safe=True)
        except BaseException:
            _close(self._http)
            raise

    def __repr__(self) -> str:
        return f"<HttpStore {self._url} tenant={self.info.tenant}>"

    @property
    def url(self) -> str:
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(is_durable=self.info.is_durable, is_shared=True)

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    # -- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str, spec: SessionSpec, now: float) -> SessionInfo:
        body = SessionIn(
            session_id=session_id,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            retry_backoff_s=spec.retry_backoff_s,
            name=spec.name,
        )
        return self._call("POST", "/v1/sessions", SessionInfo, body=body)

    def get_session(self, session_id: str) -> SessionInfo:
        return self._call("GET", _session(session_id), SessionInfo, is_safe=True)

    def list_sessions(self) -> list[SessionInfo]:
        return self._call("GET", "/v1/sessions", SessionList, is_safe=True).sessions

    def delete_session(self, session_id: str) -> None:
        self._forget(session_id)
        self._call("DELETE", _session(session_id), None)

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self,
        session_id: str,
        tasks: Sequence[NewTask],
        now: float,
        *,
        batch_key: str | None = None,
    ) -> list[str]:
        """Submit in as few requests as the server's limits allow (usually one). A batch split
        over several requests gets one derived key per part, so a retry stays exact."""
        parts = self._split(tasks)
        ids: list[str] = []
        for n, part in enumerate(parts):
            key = batch_key if batch_key is None or len(parts) == 1 else f"{batch_key}/{n}"
            body = {"tasks": part}  # NewTask encodes as the wire's TaskIn, field for field
            headers = {"Idempotency-Key": key} if key is not None else None
            out = self._call(
                "POST",
                _session(session_id, "tasks"),
                SubmitOut,
                body=body,
                headers=headers,
                is_safe=key is not None,
            )
            ids.extend(out.task_ids)
        return ids

    def _split(self, tasks: Sequence[NewTask]) -> list[Sequence[NewTask]]:
        limits = self.info.limits
        budget = int(limits.max_body_bytes * _BODY_SHARE)
        parts: list[Sequence[NewTask]] = []
        start, size = 0, 0
        for i, t in enumerate(tasks):
            cost = len(t.payload or b"") + len(t.handler) + 64
            if i > start and (i - start >= limits.max_batch_tasks or size + cost > budget):
                parts.append(tasks[start:i])
                start, size = i, 0
            size += cost
        parts.append(tasks[start:])
        return parts

    def cancel(self, session_id: str, task_ids: Sequence[str] | None, now: float) -> int:
        body = CancelIn(task_ids=None if task_ids is None else list(task_ids))
        out = self._call("POST", _session(session_id, "cancel"), CancelOut, body=body, is_safe=True)
        return out.cancelled

    def counts(self, session_id: str) -> Counts:
        return self._call("GET", _session(session_id, "counts"), Counts, is_safe=True)

    def tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """Records in the given order, fetched one request per session they belong to."""
        by_session: dict[str, list[str]] = {}
        for tid in task_ids:
            by_session.setdefault(tid.rpartition(".")[0], []).append(tid)
        found: dict[str, TaskRecord] = {}
        for sid, ids in by_session.items():
            path = _session(sid, "tasks/lookup")
            out = self._call("POST", path, TaskList, body=LookupIn(task_ids=ids), is_safe=True)
            found.update((t.task_id, t.record()) for t in out.tasks)
        return [found[tid] for tid in task_ids]

    def finished(self, session_id: str, after: int, limit: int) -> list[TaskRecord]:
        with self._lock:
            cached = self._prefetched.pop((session_id, after), None)
        if cached is not None:
            return cached[: max(0, limit)]
        if limit <= 0:
            return []
        return self._page(session_id, after, min(limit, self.info.limits.max_page), 0.0)

    def _page(self, session_id: str, after: int, limit: int, wait_s: float) -> list[TaskRecord]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if wait_s > 0:
            params["wait"] = round(wait_s, 3)
        page = self._call(
            "GET",
            _session(session_id, "finished"),
            TaskPage,
            params=params,
            is_safe=True,
            timeout_s=self.timeout_s + wait_s,
        )
        return [t.record() for t in page.tasks]

    # -- wake-ups -------------------------------------------------------------------------
    def wait_for_finished(self, session_id: str, after: int, timeout_s: float) -> None:
        """Long-poll the finished stream: the server holds the request until a task finishes
        or the wait runs out. The page it answers with is kept for the ``finished`` call that
        follows, so a wake-up costs one round trip. Never raises: a failure is a wake-up."""
        deadline = time.monotonic() + timeout_s
        wait_s = min(timeout_s, self.info.limits.max_wait_s)
        if wait_s <= 0:
            return
        try:
            records = self._page(session_id, after, PAGE, wait_s)
        except (BackendUnavailable, NotFound) as exc:
            log.debug("long-poll on %s failed: %s", session_id, exc)
            time.sleep(max(0.0, min(deadline - time.monotonic(), 0.5)))
            return
        if records:
            with self._lock:
                if len(self._prefetched) > 64:  # abandoned cursors: drop them all
                    self._prefetched.clear()
                self._prefetched[(session_id, after)] = records

    def close(self) -> None:
        _close(self._http)

    def _forget(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._prefetched if k[0] == session_id]:
                del self._prefetched[key]

    # -- transport ------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        into: type[T] | None,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        is_safe: bool = False,
        timeout_s: float | None = None,
    ) -> T:
        """One API call, decoded into ``into``, with retries of transient failures when
        ``is_safe`` (always when the request cannot have been sent)."""
        content = None if body is None else _encoder.encode(body)
        hdrs = dict(headers or {})
        if content is not None:
            hdrs["Content-Type"] = MSGPACK
        response = self.request(method, path, content, hdrs, params, is_safe, timeout_s)
        if into is None:
            return None  # type: ignore[return-value]
        try:
            return msgspec.msgpack.decode(response, type=into)
        except msgspec.DecodeError as exc:
            raise BackendUnavailable(f"{method} {path}: unreadable answer: {exc}") from None

    def request(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: dict[str, str],
        params: dict[str, Any] | None = None,
        is_safe: bool = False,
        timeout_s: float | None = None,
    ) -> bytes:
        """Send, retrying what may be retried; the answer's body, or the grid's exception
        for an error."""
        deadline = time.monotonic() + self.patience_s
        delay = 0.05
        url = self._origin + self._base_path + path + ("?" + urlencode(params) if params else "")
        timeout = urllib3.Timeout(
            connect=min(_CONNECT_TIMEOUT_S, timeout_s or self.timeout_s),
            read=timeout_s or self.timeout_s,
        )
        while True:
            try:
                response = self._http.urlopen(
                    method,
                    url,
                    body=content,
                    headers={**self._headers, **headers},
                    timeout=timeout,
                    retries=False,  # what may be repeated is decided here, per call
                    redirect=False,
                )
            except TransportError as exc:
                if not (is_safe or isinstance(exc, _NOT_SENT)):
                    raise BackendUnavailable(f"{method} {path}: {exc!r}") from exc
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status < 400:
                    return response.data
                if not (is_safe and response.status in TRANSIENT_STATUS):
                    raise error_from(response.status, response.data)
                problem = f"HTTP {response.status}"
            if time.monotonic() + delay > deadline:
                raise BackendUnavailable(f"the API at {self._url} is unavailable: {problem}")
            log.warning("%s %s: %s; retrying in %.2f s", method, path, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class HttpBlobStore:
    """Blobs through the API's blob routes: large payloads and shipped functions go up,
    large results come down. Deleting a session deletes its blobs on the server."""

    def __init__(self, store: HttpStore) -> None:
        self._store = store

    def put(self, key: str, data: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        self._store.request("PUT", _blob(key), bytes(data), headers, is_safe=True)

    def get(self, key: str) -> bytes:
        return self._store.request("GET", _blob(key), None, {}, is_safe=True)

    def delete_session(self, session_id: str) -> None:
        """Nothing to do: the API removes a session's blobs with the session."""


def _connections(
    url: str, verify: bool | str | ssl.SSLContext, timeout_s: float
) -> tuple[urllib3.HTTPConnectionPool | urllib3.ProxyManager, str]:
    """Keep-alive connections to the API at ``url``: as many as threads call at once, 16
    of them kept between calls. Through the environment's proxy for the URL's scheme, if it
    names one and ``NO_PROXY`` does not exempt the host (as curl, requests and httpx do); a
    proxy takes absolute URLs, so the second value is the origin to put before each path
    ("" when the API is reached directly, which takes paths)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"malformed API URL {url!r}: expected http(s)://host[:port]")
    tls: dict[str, Any] = {}
    if parts.scheme == "https":
        if isinstance(verify, ssl.SSLContext):
            tls["ssl_context"] = verify
        elif isinstance(verify, str):  # a CA bundle: a private CA or a self-signed certificate
            tls["ssl_context"] = ssl.create_default_context(cafile=verify)
        elif not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tls["ssl_context"] = context
            tls["assert_hostname"] = False
        else:
            tls["ssl_context"] = ssl.create_default_context()
    options: dict[str, Any] = {
        "maxsize": 16,
        "block": False,
        "timeout": urllib3.Timeout(connect=min(_CONNECT_TIMEOUT_S, timeout_s), read=timeout_s),
        **tls,
    }
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.netloc):
        return urllib3.connection_from_url(url, **options), ""
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if via.scheme not in ("http", "https") or not via.hostname:
        raise InvalidInput(f"malformed proxy URL {proxy!r} in the environment")
    if via.username is not None:  # user:password@ is the proxy's basic authentication
        auth = f"{unquote(via.username)}:{unquote(via.password or '')}"
        options["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=auth)
    origin = f"{parts.scheme}://{parts.netloc}"
    return urllib3.ProxyManager(via.geturl(), num_pools=1, **options), origin


def _close(http: urllib3.HTTPConnectionPool | urllib3.ProxyManager) -> None:
    if isinstance(http, urllib3.PoolManager):
        http.clear()
    else:
        http.close()


def _session(session_id: str, tail: str = "") -> str:
    if not session_id or "/" in session_id:
        raise InvalidInput(f"malformed session id {session_id!r}")
    path = f"/v1/sessions/{quote(session_id, safe='')}"
    return f"{path}/{tail}" if tail else path


def _blob(key: str) -> str:
    session_id, name = split_blob_key(key)
    return _session(session_id, f"blobs/{quote(name, safe='')}")
