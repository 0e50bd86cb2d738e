"""SQLite wake-up files and WAL checkpoints: a waiter wakes for the commits it waits for,
only for those, and never waits for a checkpoint."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from htcgrid.backends import wakefiles
from htcgrid.backends.sqlite import SqliteBackend
from htcgrid.backends.wakefiles import Bells, Wake, open_watch
from htcgrid.core.model import NewTask, SessionSpec


def test_a_ring_wakes_a_watch_of_that_kind_only(tmp_path: Path) -> None:
    db = tmp_path / "grid.db"
    bells = Bells(db)
    work, done = open_watch(db, Wake.WORK), open_watch(db, Wake.DONE)
    if work is None or done is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    assert not work.wait(0.01)  # nothing rang yet
    bells.ring({Wake.WORK})
    assert work.wait(5.0)
    assert not done.wait(0.01)  # the other kind slept through it
    work.drain()
    assert not work.wait(0.01)  # the wait took the token: the next one needs a new ring
    bells.ring({Wake.WORK, Wake.DONE})
    assert work.wait(5.0) and done.wait(5.0)
    for closing in (work, done, bells):
        closing.close()


def test_a_work_token_wakes_one_idle_worker_not_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that made one task claimable wakes one waiting worker; one of n tasks, up to
    n. (On a 2-core machine the others would only race for the task, taking CPU from the
    one that gets it.)"""
    monkeypatch.setattr(wakefiles, "SAFETY_S", 10.0)  # no safety re-check inside the test
    store = SqliteBackend(tmp_path / "grid.db")
    if open_watch(store.path, Wake.WORK) is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    store.create_session("s", SessionSpec(), time.time())
    woken: list[int] = []

    def wait(n: int) -> None:
        store.wait_for_work(30.0)  # each thread its own connection and watch
        woken.append(n)

    waiters = [threading.Thread(target=wait, args=(n,)) for n in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)  # all three checked the store, found nothing, and wait
    assert woken == []
    task = NewTask(handler="import:m:f", payload=b"x")
    store.submit("s", [task], time.time())
    time.sleep(0.5)
    assert len(woken) == 1  # the other two sleep on
    store.submit("s", [task, task], time.time())
    for waiter in waiters:
        waiter.join(5.0)
    assert sorted(woken) == [0, 1, 2]
    store.close()


def test_each_worker_a_commit_woke_stays_woken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A woken worker takes one token, not the others' too: their polls, made after it took
    them, would find the FIFO empty and sleep on, so a large submit would start one worker
    at once and the others only at their next safety re-check."""
    monkeypatch.setattr(wakefiles, "SAFETY_S", 10.0)  # no safety re-check inside the test
    store = SqliteBackend(tmp_path / "grid.db")
    if open_watch(store.path, Wake.WORK) is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    store.create_session("s", SessionSpec(), time.time())

    def wait(woken: list[float]) -> None:
        store.wait_for_work(30.0)
        woken.append(time.monotonic())

    for _ in range(5):  # which waiter runs first is up to the scheduler: try a few times
        woken: list[float] = []
        waiters = [threading.Thread(target=wait, args=(woken,)) for _ in range(3)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.2)  # all three checked the store, found nothing, and wait
        task = NewTask(handler="import:m:f", payload=b"x")
        rung = time.monotonic()
        store.submit("s", [task] * 100, time.time())
        for waiter in waiters:
            waiter.join(15.0)
        assert len(woken) == 3 and max(woken) - rung < 2.0  # all at once, none at 10 s
        store.claim("w", 100, 30.0, time.time())  # empty the store for the next try
    store.close()


def test_an_older_plain_work_file_is_replaced_by_the_fifo(tmp_path: Path) -> None:
    db = tmp_path / "grid.db"
    Wake.WORK.path(db).write_bytes(b"\0")  # what an older htcgrid rang with inotify
    bells = Bells(db)
    work = open_watch(db, Wake.WORK)
    if work is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    assert stat.S_ISFIFO(Wake.WORK.path(db).stat().st_mode)
    bells.ring({Wake.WORK})
    assert work.wait(5.0)
    work.close()
    bells.close()


def test_store_writes_ring_what_they_did(tmp_path: Path) -> None:
    """A submit rings WORK, a completion DONE; a claim rings nothing (on a 2-core machine a
    needless wake-up is CPU taken from an executor)."""
    store = SqliteBackend(tmp_path / "grid.db")
    work, done = open_watch(store.path, Wake.WORK), open_watch(store.path, Wake.DONE)
    if work is None or done is None:
        pytest.skip("no inotify on this system: the backend polls instead")
    store.create_session("s", SessionSpec(), time.time())
    assert not work.wait(0.01) and not done.wait(0.01)
    store.submit("s", [NewTask(handler="import:m:f", payload=b"x")], time.time())
    assert work.wait(5.0) and not done.wait(0.01)
    work.drain()
    [claim] = store.claim("w", 1, 30.0, time.time())
    assert not work.wait(0.01) and not done.wait(0.01)
    store.cancel("s", [claim.lease.task_id], time.time())
    assert done.wait(5.0) and not work.wait(0.01)
    store.close()


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


def test_writers_copy_the_wal_back_after_their_commit_not_inside_it(tmp_path: Path) -> None:
    """htcgrid's writers checkpoint once the WAL holds 2,000 pages not copied back (after
    ringing their waiters); SQLite's own checkpoint inside a COMMIT is only a backstop at
    10,000 pages (40 MB). 60 MB of inputs must leave the WAL well under that."""
    store = SqliteBackend(tmp_path / "grid.db")
    store.create_session("s", SessionSpec(), time.time())
    payload = b"x" * 2000
    for _ in range(60):
        store.submit("s", [NewTask(handler="import:m:f", payload=payload)] * 500, time.time())
    wal = tmp_path / "grid.db-wal"
    assert wal.stat().st_size < 16 * 2**20
    assert store.counts("s").pending == 30_000
    store.close()
