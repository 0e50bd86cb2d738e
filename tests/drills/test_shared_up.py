"""Drill: two ``htcgrid up --store URL`` serve one shared Redis store side by side.

Each ``up`` (its own --home, as on two machines) runs a reaper and a worker process. A
client's session must be finished by the workers of both; when one worker is killed
mid-task, its attempt is reaped exactly once although two reapers look at it, and the task
is retried and succeeds once.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import htcgrid
from htcgrid.backends.base import Backend
from htcgrid.core.states import TaskState
from tests.drills import handlers
from tests.drills.conftest import HOST_ENV, RECORD_ENV, Proc, Processes, drill_env, wait_until
from tests.stores import open_store

pytestmark = pytest.mark.drill

LEASE_TTL_S = 2.0
UP_REAPER_PERIOD_S = 1.0  # what ``htcgrid up`` runs its reaper with
SLACK_S = 1.5


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Backend]:
    backend = open_store("redis", tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def start_up(procs: Processes, name: str, url: str, tmp_path: Path) -> Proc:
    argv = [sys.executable, "-m", "htcgrid.cli", "up", "--home", str(tmp_path / name)]
    argv += ["--store", url, "--workers", "1", "--lease-ttl", str(LEASE_TTL_S)]
    env = drill_env(**{HOST_ENV: name, RECORD_ENV: str(tmp_path / f"{name}.record")})
    return procs.start(name, argv, env)


def test_two_ups_share_a_store_and_their_reapers_never_reap_twice(
    store: Backend, procs: Processes, tmp_path: Path
) -> None:
    up_a, up_b = (start_up(procs, name, store.url, tmp_path) for name in ("up-a", "up-b"))
    for up in (up_a, up_b):
        wait_until(
            lambda up=up: "htcgrid up: store" in up.log() and " serving " in up.log(),
            30,
            f"{up.name} and its worker to start\n{procs.logs()}",
        )
    [agent_a] = children(up_a.pid)

    with htcgrid.connect(store.url, start_workers=False) as grid:
        session = grid.session(max_attempts=3)
        inputs = [(f"t{i}", 0.05) for i in range(120)]
        futures = session.submit_many(handlers.nap, inputs)

        def running_on_a() -> list[str]:
            leases = store.expired(time.time() + 3600, 10_000)
            return [x.task_id for x in leases if f"-{agent_a}-" in x.worker_id]

        wait_until(lambda: bool(running_on_a()), 30, f"up-a's worker to run a task\n{procs.logs()}")
        held = running_on_a()
        os.kill(agent_a, signal.SIGKILL)  # its leases are left to expire
        killed_at = time.monotonic()
        wait_until(lambda: all(r.n_lost for r in store.tasks(held)), 30, f"{held} to be reaped")
        reaped_s = time.monotonic() - killed_at
        bound = LEASE_TTL_S + UP_REAPER_PERIOD_S + SLACK_S
        assert reaped_s <= bound, f"reaped after {reaped_s:.2f} s, bound {bound:g} s"

        values = [f.result(timeout=60) for f in futures]
        assert [v[0] for v in values] == [key for key, _ in inputs]
        by_up = Counter(v[1] for v in values)
        assert set(by_up) == {"up-a", "up-b"}, f"not served by both: {by_up}"
        counts = session.counts()
        assert (counts.succeeded, counts.total) == (len(inputs), len(inputs)), counts
        records = store.tasks([f.task_id for f in futures])
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        assert all(r.n_errors == r.n_timeouts == 0 and r.attempt == 1 + r.n_lost for r in records)
        lost = {r.task_id: r.n_lost for r in records if r.n_lost}
        assert set(held) <= set(lost) and set(lost.values()) == {1}, lost

    for up in (up_a, up_b):
        assert up.stop() == 0 and "stopped." in up.log(), up.log()[-3000:]
    assert re.search(rf"worker 0 \(pid {agent_a}\) exited with -9; restarting", up_a.log())
    reaped = Counter(
        m
        for up in (up_a, up_b)
        for m in re.findall(r"lease expired: task (\S+ attempt \d+)", up.log())
    )
    assert sorted(reaped) == sorted(f"{tid} attempt 1" for tid in lost), reaped
    assert set(reaped.values()) == {1}, f"an attempt was reaped twice: {reaped}"
    for up in (up_a, up_b):
        assert "reaper pass failed" not in up.log() and "reaper: " not in up.log(), up.log()
    reapers = {up.name for up in (up_a, up_b) if "lease expired" in up.log()}
    print(
        f"\n[drill shared up] tasks per up {dict(by_up)}; killed up-a's worker holding "
        f"{held}, reaped after {reaped_s:.2f} s by {sorted(reapers)}"
    )
