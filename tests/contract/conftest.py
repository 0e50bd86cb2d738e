"""The one place that knows which backends exist: every contract test runs against each.

A new backend joins the suite by adding a name to ``BACKENDS`` and a branch to ``open_store``;
the tests themselves use only the port and its declared capabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from htcgrid.backends.base import Backend

BACKENDS = ("memory", "sqlite")


def open_store(name: str, tmp_path: Path) -> Backend:
    """A fresh, empty store of backend ``name``, keeping any files under ``tmp_path``."""
    if name == "memory":
        from htcgrid.backends.memory import MemoryBackend

        return MemoryBackend()
    if name == "sqlite":
        from htcgrid.backends.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "grid.db")
    raise ValueError(f"no such backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store = open_store(request.param, tmp_path)
    yield store
    store.close()
