"""A real embedded grid (SQLite store, reaper, worker processes) shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import htcgrid
from htcgrid import EmbeddedGrid


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedGrid]:
    home = tmp_path_factory.mktemp("grid")
    with EmbeddedGrid(
        home, workers=1, concurrency=2, lease_ttl_s=3.0, reaper_period_s=0.2, log_dir=home / "logs"
    ) as eg:
        yield eg


@pytest.fixture
def grid(embedded: EmbeddedGrid) -> Iterator[htcgrid.Grid]:
    with htcgrid.connect(embedded.url, start_workers=False) as g:
        yield g


def logs(home: Path) -> str:
    """Worker logs, for failure messages."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(home.glob("logs/*.log")))
