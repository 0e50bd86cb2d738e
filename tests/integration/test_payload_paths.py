"""Large inputs and results through real workers on every store, wherever the blobs live.

Executors read a large input and write a large result themselves, and the agent passes
names: from and to files (the embedded store, or a Redis or PostgreSQL store opened with
``?blobs=DIR``), or over connections of their own to Redis or PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import htcgrid
from htcgrid import EmbeddedGrid
from htcgrid.backends.blobs import FileBlobStore
from htcgrid.backends.registry import open_backend
from tests.integration import handlers
from tests.stores import open_store

MIB = 1024 * 1024


def _names_once_inputs_go(session_dir: Path, patience_s: float = 10.0) -> list[str]:
    """The session's blob files, once its input files are gone or ``patience_s`` passed.
    The agent deletes a task's input after the store accepted its completion, so a result
    can reach the client a moment before its input is deleted."""
    deadline = time.monotonic() + patience_s
    while True:
        names = sorted(p.name for p in session_dir.iterdir())
        if not any(n.startswith("input-") for n in names) or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


@pytest.mark.parametrize("name", ["sqlite", "redis", "postgres", "redis-files", "postgres-files"])
def test_megabyte_inputs_and_results_arrive_whole(name: str, tmp_path: Path) -> None:
    backend, _, files = name.partition("-")
    store = open_store(backend, tmp_path / "store")
    if files:  # the same store with its blobs as files
        url = f"{store.url}&blobs={tmp_path / 'blobs'}"
        store.close()
        store = open_backend(url)
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
            assert isinstance(store.blobs, FileBlobStore) == (backend == "sqlite" or bool(files))
            if isinstance(store.blobs, FileBlobStore):
                # the results are files; each task's input file is gone, no temporary is left
                session_dir = store.blobs.root / session.session_id
                names = _names_once_inputs_go(session_dir)
                assert [n for n in names if n.startswith("output-")], names
                assert not [n for n in names if n.startswith(("input-", "."))], names
                store.delete_session(session.session_id)
                assert not session_dir.exists()  # deleting the session took its files
    finally:
        store.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [("blobs=relative/dir", "absolute directory"), ("blobs=/a&blobs=/b", "absolute directory")],
)
def test_a_bad_blob_directory_is_refused_when_the_store_opens(query: str, message: str) -> None:
    for url in (f"redis://127.0.0.1:6379/15?{query}", f"postgresql://u@h/db?{query}"):
        with pytest.raises(htcgrid.InvalidInput, match=message):
            open_backend(url)
