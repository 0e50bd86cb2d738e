"""Large inputs and results through real workers on every store: the two ways they travel.

With the embedded store the blobs are files on the worker's machine, and executors read the
input and write the result themselves (the agent passes names); with Redis and PostgreSQL
the agent fetches and stores the bytes and hands them to the executor through its socket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import htcgrid
from htcgrid import EmbeddedGrid
from htcgrid.backends.blobs import FileBlobStore
from tests.integration import handlers
from tests.stores import open_store

MIB = 1024 * 1024


@pytest.mark.parametrize("name", ["sqlite", "redis", "postgres"])
def test_megabyte_inputs_and_results_arrive_whole(name: str, tmp_path: Path) -> None:
    store = open_store(name, tmp_path / "store")
    inputs = [bytes([i]) * MIB + bytes(range(256)) for i in range(6)]
    try:
        with (
            EmbeddedGrid(tmp_path / "home", store_url=store.url, workers=1, concurrency=2),
            htcgrid.connect(store.url, start_workers=False) as grid,
            grid.session() as session,
        ):
            futures = session.submit_many(handlers.echo, inputs)
            assert [f.result(timeout=60) for f in futures] == inputs
            records = store.tasks([f.task_id for f in futures])
            assert all(r.result_ref is not None and r.result is None for r in records)
            if isinstance(store.blobs, FileBlobStore):
                # the executors wrote the results; each task's input file is gone
                files = sorted(p.name for p in (store.blobs.root / session.session_id).iterdir())
                assert [f for f in files if f.startswith("output-")] and not [
                    f for f in files if f.startswith(("input-", "."))
                ], files
    finally:
        store.close()
