"""The grid handle: open sessions on a store, directly (trusted network) or embedded."""

from __future__ import annotations

import atexit
import ssl
import time
from pathlib import Path
from typing import Any

from htcgrid.backends.base import ClientStore
from htcgrid.backends.blobs import DEFAULT_INLINE_LIMIT
from htcgrid.backends.registry import default_store_url, open_backend
from htcgrid.client.executor import GridExecutor
from htcgrid.client.session import Session
from htcgrid.core.errors import InvalidInput
from htcgrid.core.ids import check_session_id, new_session_id
from htcgrid.core.model import Codec, SessionInfo, SessionSpec
from htcgrid.embedded import EmbeddedGrid, is_serving


class Grid:
    """A connection to one grid. Make it with :func:`connect`; close it when done."""

    def __init__(
        self,
        backend: ClientStore,
        *,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        embedded: EmbeddedGrid | None = None,
    ) -> None:
        self.backend = backend
        self.inline_limit = inline_limit
        self.embedded = embedded
        self._sessions: list[Session] = []

    def __repr__(self) -> str:
        return f"<Grid {self.backend.url}>"

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(
        self,
        *,
        priority: int = 0,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        retry_backoff_s: float = 0.0,
        name: str = "",
        codec: str | Codec = Codec.PICKLE,
        session_id: str | None = None,
    ) -> Session:
        """Open a new session; its options are defaults for every task submitted to it."""
        spec = session_spec(
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            retry_backoff_s=retry_backoff_s,
            name=name,
        )
        sid = check_session_id(session_id) if session_id else new_session_id()
        info = self.backend.create_session(sid, spec, time.time())
        return self._open(info, parse_codec(codec))

    def attach(self, session_id: str, *, codec: str | Codec = Codec.PICKLE) -> Session:
        """Reopen an existing session by id (NotFound if the store has no such session)."""
        return self._open(self.backend.get_session(session_id), parse_codec(codec))

    def sessions(self) -> list[SessionInfo]:
        """Every session in the store with its counts."""
        return self.backend.list_sessions()

    def delete_session(self, session_id: str) -> None:
        """Remove a session, its tasks, results and blobs."""
        self.backend.delete_session(session_id)

    def executor(self, **session_options: Any) -> GridExecutor:
        """A :class:`concurrent.futures.Executor` running calls as tasks of a new session."""
        return GridExecutor(self.session(**session_options))

    def close(self) -> None:
        """Close sessions, the store connection, and the embedded grid if this handle started it."""
        for s in self._sessions:
            s.close()
        self._sessions.clear()
        self.backend.close()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    def _open(self, info: SessionInfo, codec: Codec) -> Session:
        session = Session(self.backend, info, codec=codec, inline_limit=self.inline_limit)
        self._sessions.append(session)
        return session


def session_spec(
    *, priority: int, max_attempts: int, timeout_s: float | None, retry_backoff_s: float, name: str
) -> SessionSpec:
    """Validate session options at the edge and build the spec."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"priority must be an int, not {priority!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidInput(f"max_attempts must be an int >= 1, not {max_attempts!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise InvalidInput(f"timeout_s must be positive or None, not {timeout_s!r}")
    if not retry_backoff_s >= 0:
        raise InvalidInput(f"retry_backoff_s must be >= 0, not {retry_backoff_s!r}")
    return SessionSpec(
        priority=priority,
        max_attempts=max_attempts,
        timeout_s=None if timeout_s is None else float(timeout_s),
        retry_backoff_s=float(retry_backoff_s),
        name=name,
    )


def parse_codec(codec: str | Codec) -> Codec:
    try:
        return Codec(codec)
    except ValueError:
        names = ", ".join(c.value for c in Codec)
        raise InvalidInput(f"unknown codec {codec!r}; expected one of {names}") from None


def connect(
    url: str | None = None,
    *,
    workers: int | None = None,
    start_workers: bool = True,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
    token: str | None = None,
    verify: bool | str | ssl.SSLContext = True,
) -> Grid:
    """Connect to a grid.

    ``url=None`` means the local embedded grid (``$HTCGRID_STORE`` or ``~/.htcgrid``). For a
    SQLite store that no ``htcgrid up`` is serving, local workers are started on demand (with
    ``workers`` processes, default one per core) and stopped when the grid handle closes.

    An ``http://`` or ``https://`` URL goes through the grid's HTTP API with a bearer ``token``
    (default ``$HTCGRID_TOKEN``); ``verify`` is False or a CA bundle path for private TLS.
    """
    url = url or default_store_url()
    if url.startswith(("http://", "https://")):
        from htcgrid.client.http import HttpStore

        remote = HttpStore(url, token, verify=verify)
        limit = min(inline_limit, remote.info.limits.max_payload_bytes)
        return Grid(remote, inline_limit=limit)
    backend = open_backend(url)
    embedded = None
    if start_workers and url.startswith("sqlite://"):
        store = Path(url.removeprefix("sqlite://"))
        if not is_serving(store):
            embedded = EmbeddedGrid(
                store_path=store, workers=workers, log_dir=store.parent / "logs"
            ).start()
            atexit.register(embedded.stop)
    return Grid(backend, inline_limit=inline_limit, embedded=embedded)
