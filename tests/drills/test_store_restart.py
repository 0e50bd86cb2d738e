"""Drill: the store crashes and restarts in the middle of a session.

The store is a server the drill owns (Redis with ``appendfsync always``, or a PostgreSQL
cluster of its own). An embedded grid (two worker processes, the reaper on a thread) and a
client run a session of short tasks; the server is killed without a shutdown and started
again on the same port and files while the client is still submitting. Workers, reaper and
client must ride it out, and every task must end SUCCEEDED exactly once: no accepted result
lost or changed, none duplicated, every future resolved.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import htcgrid
from htcgrid import EmbeddedGrid
from htcgrid.core.states import TaskState
from tests.drills import handlers
from tests.drills.conftest import RECORD_ENV, wait_until, worker_stats
from tests.drills.servers import PostgresCluster, RedisServer

pytestmark = pytest.mark.drill

FIRST = 2000  # submitted before the crash
SECOND = 500  # submitted while the store is down
#: Longer than a backend retries one call on its own (Redis: about 3 s), so the grid's own
#: loops (worker, heartbeat, reaper, client collector and submit) must ride the outage out.
DOWN_S = 8.0


@pytest.fixture(params=["redis", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RedisServer | PostgresCluster]:
    s = RedisServer(tmp_path / "redis") if request.param == "redis" else PostgresCluster()
    try:
        s.start()
        yield s
    finally:
        s.remove()


def collector_alive(session_id: str) -> bool:
    return any(t.name == f"htcgrid-collector-{session_id}" for t in threading.enumerate())


def test_a_store_crash_mid_session_loses_and_duplicates_nothing(
    server: RedisServer | PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.store_url("drill")
    record = tmp_path / "runs.record"
    monkeypatch.setenv(RECORD_ENV, str(record))  # inherited by the grid's workers
    logs = tmp_path / "logs"
    total = FIRST + SECOND
    grid = EmbeddedGrid(
        store_url=url, workers=2, lease_ttl_s=10.0, reaper_period_s=0.2, log_dir=logs
    )
    with grid, htcgrid.connect(url, start_workers=False) as client:
        session = client.session(max_attempts=3)
        futures = session.submit_many(handlers.tick, range(FIRST))
        wait_until(lambda: session.counts().succeeded >= FIRST // 4, 60, "a quarter done")
        before = client.backend.finished(session.session_id, 0, total)

        server.crash()
        crashed_at = time.monotonic()
        restart = threading.Timer(DOWN_S, server.start)
        restart.start()
        try:
            futures += session.submit_many(handlers.tick, range(FIRST, total))  # rides it out
        finally:
            restart.join()
        submitted_s = time.monotonic() - crashed_at
        assert before and len(before) < FIRST, "crashed too late to test anything"

        def all_resolved() -> bool:
            if not collector_alive(session.session_id) and not all(f.done() for f in futures):
                pytest.fail("the client's result collector died in the outage")
            return all(f.done() for f in futures)

        done_s = wait_until(all_resolved, 90, f"every future\n{session.counts()}")
        assert [f.result() for f in futures] == [2 * x for x in range(total)]
        assert grid.restarts == 0, "a worker process died in the outage"
        assert any(t.name == "htcgrid-reaper" for t in threading.enumerate()), "reaper died"

        counts = session.counts()
        assert (counts.succeeded, counts.total) == (total, total), counts
        ids = [f.task_id for f in futures]
        records = client.backend.tasks(ids)
        assert all(r.state is TaskState.SUCCEEDED for r in records)
        assert all(r.n_errors == r.n_timeouts == 0 and r.attempt == 1 + r.n_lost for r in records)
        after = {r.task_id: r for r in records}
        for r in before:  # accepted before the crash: still there, unchanged
            a = after[r.task_id]
            assert (a.state, a.attempt, a.result, a.done_seq) == (
                r.state,
                r.attempt,
                r.result,
                r.done_seq,
            ), r.task_id
        stream = client.backend.finished(session.session_id, 0, 2 * total)
        assert sorted(r.task_id for r in stream) == sorted(ids), "finished stream not exact"
        assert len({r.done_seq for r in stream}) == total

    runs = Counter(line.split()[1] for line in record.read_text().splitlines())
    assert set(runs) == {str(x) for x in range(total)}
    over = {tid: runs[str(x)] for x, tid in enumerate(ids) if runs[str(x)] > after[tid].attempt}
    assert not over, f"tasks ran more often than they were attempted: {over}"
    worker_logs = "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "; retrying" in worker_logs, "the workers never saw the store go away"
    stats = worker_stats(worker_logs)
    assert len(stats) == 2, stats
    succeeded = sum(s["succeeded"] for s in stats.values())
    rejected = sum(s["rejected"] for s in stats.values())
    assert succeeded <= total <= succeeded + rejected, stats
    rerun = sum(n - 1 for n in runs.values())
    print(
        f"\n[drill store restart {url.split(':')[0]}] down {DOWN_S:g} s at "
        f"{len(before)}/{FIRST} done; second submit returned {submitted_s:.2f} s after the "
        f"crash; all {total} resolved {done_s:.2f} s later; re-run attempts {rerun}; "
        f"lost leases {sum(r.n_lost for r in records)}; workers {stats}"
    )
