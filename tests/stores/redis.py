"""Fresh Redis stores for the tests: database 15 of the local server, one key prefix each.

Each store gets a unique prefix, so test runs (and tests) sharing the server never see each
other's keys and no test flushes anything. The prefix is in the store's URL, so
``open_backend(backend.url)`` opens the same store from another process. The keys of every
store a test process created are deleted when that process exits (not when the store is
closed: the reopen tests close a store and open it again by its URL).

``HTCGRID_TEST_REDIS`` names another server (for example one with AOF enabled, to run the
durability tests): ``redis://host:port/db``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
from pathlib import Path

import redis

from htcgrid.backends.base import Backend
from tests.stores import missing_service

DEFAULT_URL = "redis://127.0.0.1:6379/15"
_created: list[tuple[str, str]] = []  # (server URL, prefix) of every store made here


def server_url() -> str:
    return os.environ.get("HTCGRID_TEST_REDIS", DEFAULT_URL)


def open_redis_store(tmp_path: Path) -> Backend:
    """A fresh, empty Redis store, or a skip (a failure under CI) if Redis is unreachable."""
    from htcgrid.backends.redis import RedisBackend

    url = server_url()
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2.0) as client:
            client.ping()
    except redis.RedisError as exc:
        missing_service("redis", f"{url}: {exc}")
    prefix = f"htcgrid-test-{uuid.uuid4().hex}"
    if not _created:
        atexit.register(_delete_created)
    _created.append((url, prefix))
    return RedisBackend.from_url(f"{url}?prefix={prefix}")


def delete_store(url: str, prefix: str) -> None:
    """Delete every key of the store with ``prefix`` (its session keys and store keys)."""
    with redis.Redis.from_url(url) as client:
        for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*"):
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)


def _delete_created() -> None:
    for url, prefix in _created:
        with contextlib.suppress(redis.RedisError):  # the server went away: nothing to clean
            delete_store(url, prefix)
