"""Open a backend from its URL: ``memory://``, ``sqlite:///path/to/grid.db``,
``redis://host:6379/0`` (``rediss://`` for TLS) or ``postgresql://user@host/db``."""

from __future__ import annotations

import os
from pathlib import Path

from htcgrid.backends.base import Backend
from htcgrid.backends.blobs import GridBlobStore
from htcgrid.core.errors import InvalidInput

#: Environment variable naming the store when no URL is given.
STORE_ENV = "HTCGRID_STORE"
#: Environment variable naming the directory of the default embedded grid.
HOME_ENV = "HTCGRID_HOME"


def default_home() -> Path:
    """Directory of the default embedded grid: ``$HTCGRID_HOME`` or ``~/.htcgrid``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".htcgrid")


def default_store_url() -> str:
    """``$HTCGRID_STORE``, else the embedded grid's SQLite file in :func:`default_home`."""
    return os.environ.get(STORE_ENV) or f"sqlite://{default_home() / 'grid.db'}"


def open_backend(url: str) -> Backend:
    """Open the store at ``url``; raise :class:`InvalidInput` naming the schemes we know."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidInput(f"malformed store URL {url!r}: expected 'sqlite:///path' or 'memory://'")
    if scheme == "memory":
        from htcgrid.backends.memory import MemoryBackend

        return MemoryBackend()
    if scheme == "sqlite":
        from htcgrid.backends.sqlite import SqliteBackend

        if not rest:
            raise InvalidInput(f"store URL {url!r} names no file: use 'sqlite:///path/to/grid.db'")
        return SqliteBackend(Path(rest))
    if scheme in ("redis", "rediss"):
        from htcgrid.backends.redis import RedisBackend

        return RedisBackend.from_url(url)
    if scheme in ("postgresql", "postgres"):
        from htcgrid.backends.postgres import PostgresBackend

        return PostgresBackend.from_url(url)
    raise InvalidInput(
        f"unknown store scheme {scheme!r} in {url!r}; known: memory, sqlite, redis, rediss, "
        "postgresql"
    )


def open_blob_store(url: str) -> GridBlobStore | None:
    """The blob store of the store at ``url`` alone, without its task state: for a process
    that moves large inputs and results but leases nothing (a worker's executors). None for
    ``memory://``, whose blobs live inside the process that holds the store."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite" and rest:
        from htcgrid.backends.sqlite import SqliteBackend

        return SqliteBackend.open_blobs(Path(rest))
    if scheme in ("redis", "rediss"):
        from htcgrid.backends.redis import RedisBackend

        return RedisBackend.open_blobs(url)
    if scheme in ("postgresql", "postgres"):
        from htcgrid.backends.postgres import PostgresBackend

        return PostgresBackend.open_blobs(url)
    if scheme == "memory":
        return None
    raise InvalidInput(f"no blob store for the store URL {url!r}")
