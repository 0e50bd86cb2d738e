"""Fresh, isolated stores of every backend for the tests, and the rule for missing servers.

A test that needs a server (Redis, PostgreSQL) skips when the server is not reachable on a
developer's machine, but fails when ``CI=true``: CI must never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htcgrid.backends.base import Backend


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_service(name: str, why: str) -> None:
    """Skip the test, or fail it under CI, because service ``name`` is unreachable."""
    message = f"{name} is not reachable ({why})"
    if is_ci():
        pytest.fail(f"{message}; CI=true requires it (.ci/run starts it)")
    pytest.skip(message)


def open_store(name: str, tmp_path: Path) -> Backend:
    """A fresh, empty store of backend ``name``; files go under ``tmp_path``.

    Its ``url`` opens the same store from another process (the multi-process tests rely on it).
    """
    if name == "memory":
        from htcgrid.backends.memory import MemoryBackend

        return MemoryBackend()
    if name == "sqlite":
        from htcgrid.backends.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "grid.db")
    if name == "redis":
        from tests.stores.redis import open_redis_store

        return open_redis_store(tmp_path)
    if name == "postgres":
        from tests.stores.postgres import open_postgres_store

        return open_postgres_store(tmp_path)
    raise ValueError(f"no such backend {name!r}")
