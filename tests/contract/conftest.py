"""The one place that knows which backends exist: every contract test runs against each.

A new backend joins the suite by adding its name to ``BACKENDS`` and a branch to
:func:`tests.stores.open_store`; the tests themselves use only the port and its declared
capabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from htcgrid.backends.base import Backend
from tests.stores import open_store

BACKENDS = ("memory", "sqlite", "redis", "postgres")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store = open_store(request.param, tmp_path)
    yield store
    store.close()
