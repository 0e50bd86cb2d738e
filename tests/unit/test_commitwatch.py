"""The SQLite commit watch: another connection's commit wakes a waiting thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from htcgrid.backends.commitwatch import open_watch
from htcgrid.backends.sqlite import SqliteBackend
from htcgrid.core.model import NewTask, SessionSpec


def wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    return conn


def test_a_commit_in_another_connection_wakes_the_watch(tmp_path: Path) -> None:
    db = tmp_path / "grid.db"
    writer = wal_db(db)
    watch = open_watch(db)
    if watch is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    watch.drain()
    assert not watch.wait(0.01)  # nothing happened yet
    writer.execute("INSERT INTO t VALUES (1)")
    assert watch.wait(5.0)
    watch.drain()
    assert not watch.wait(0.01)  # drained: the next wait needs a new change
    watch.close()


def test_waits_end_when_another_process_finishes_a_task(tmp_path: Path) -> None:
    store = SqliteBackend(tmp_path / "grid.db")
    other = SqliteBackend(tmp_path / "grid.db")  # another connection, as another process
    store.create_session("s", SessionSpec(), time.time())
    [tid] = store.submit("s", [NewTask(handler="import:m:f", payload=b"x")], time.time())
    woke = threading.Event()

    def wait() -> None:
        store.wait_for_finished("s", 0, 30.0)
        woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not woke.wait(0.2)  # nothing finished: still waiting
    [claim] = other.claim("w", 1, 30.0, time.time())
    other.cancel("s", [tid], time.time())
    waiter.join(10.0)
    assert woke.is_set() and claim.lease.task_id == tid
    store.close()
    other.close()


def test_a_writer_queues_behind_another_and_then_writes(tmp_path: Path) -> None:
    store = SqliteBackend(tmp_path / "grid.db")
    store.create_session("s", SessionSpec(), time.time())
    blocker = sqlite3.connect(tmp_path / "grid.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
    done = threading.Event()

    def submit() -> None:
        store.submit("s", [NewTask(handler="import:m:f", payload=b"x")], time.time())
        done.set()

    writer = threading.Thread(target=submit)
    writer.start()
    assert not done.wait(0.2)  # ...so the submit waits for it
    blocker.execute("COMMIT")
    writer.join(10.0)
    assert done.is_set() and store.counts("s").pending == 1
    store.close()
