"""The Redis backend's wake-up hints (docs/redis.md, *Wake-ups*): what the port-level suite
cannot reach, since it needs a race between two workers to be forced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from htcgrid.backends.base import Backend
from tests.stores import open_store

from .helpers import TTL, open_session


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    store = open_store("redis", tmp_path)
    yield store
    store.close()


def test_a_claim_keeps_its_tasks_when_it_looks_again(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_session(backend, "a", n=2)
    open_session(backend, "b", n=1)
    backend.claim("w1", 1, TTL, 1.0)
    backend.claim("w1", 1, TTL, 1.0)
    # now one session is drained but still in the hint, the other has one task: a claim
    # takes that task and drops the drained one; make the drop report new tasks
    readiness: Any = backend._readiness  # type: ignore[attr-defined]
    real_drop = readiness.drop
    monkeypatch.setattr(readiness, "drop", lambda seen: real_drop(seen) or True)
    claimed = backend.claim("w2", 10, TTL, 1.0)
    assert len(claimed) == 1  # the second look finds nothing, the first look's task stays
