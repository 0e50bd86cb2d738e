"""The embedded grid stopped, even killed, mid-session and started again loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import htcgrid
from htcgrid import EmbeddedGrid
from tests.integration import handlers


def _wait_running(session: htcgrid.Session, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while session.counts().succeeded < 20 or session.counts().running == 0:
        assert time.monotonic() < deadline, session.counts()
        time.sleep(0.02)


def test_a_killed_grid_restarted_on_the_same_store_finishes_every_task_once(
    tmp_path: Path,
) -> None:
    options = {"workers": 2, "lease_ttl_s": 1.0, "reaper_period_s": 0.2}
    first = EmbeddedGrid(tmp_path, log_dir=tmp_path / "logs", **options).start()
    with htcgrid.connect(first.url, start_workers=False) as grid:
        session = grid.session(max_attempts=3)
        futures = session.submit_many(handlers.sleep_s, [0.01] * 400)
        _wait_running(session)
        for pid in first.pids:  # a crash: no drain, leases left to expire
            os.kill(pid, signal.SIGKILL)
        first.stop()
        interrupted = session.counts()
        assert interrupted.pending + interrupted.running > 0, "stopped too late to test"

        with EmbeddedGrid(tmp_path, log_dir=tmp_path / "logs", **options):
            assert all(f.result(timeout=60) == 0.01 for f in futures)
        counts = session.counts()
        assert (counts.succeeded, counts.total) == (400, 400)
        records = grid.backend.tasks([f.task_id for f in futures])
        lost = [r for r in records if r.n_lost]
        assert all(r.attempt == 1 + r.n_lost for r in records)
        assert interrupted.running == 0 or lost, "killed attempts must come back as retries"


def test_a_drained_grid_restarted_later_runs_what_was_left_pending(tmp_path: Path) -> None:
    first = EmbeddedGrid(tmp_path, workers=1, log_dir=tmp_path / "logs").start()
    with htcgrid.connect(first.url, start_workers=False) as grid:
        session = grid.session()
        futures = session.submit_many(handlers.sleep_s, [0.005] * 300)
        _wait_running(session)
        first.stop()  # graceful: in-flight attempts finish and are recorded
        assert session.counts().running == 0
        with EmbeddedGrid(tmp_path, workers=1, log_dir=tmp_path / "logs"):
            assert all(f.result(timeout=60) == 0.005 for f in futures)
        assert session.counts().succeeded == 300
        assert all(r.attempt == 1 for r in grid.backend.tasks([f.task_id for f in futures]))


def test_workers_of_a_killed_grid_exit_instead_of_serving_as_orphans(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from htcgrid import EmbeddedGrid\n"
        "grid = EmbeddedGrid(Path(sys.argv[1]), workers=2).start()\n"
        "print(' '.join(map(str, grid.pids)), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.kill()  # SIGKILL: the grid gets no chance to stop its workers
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "workers outlived their grid"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
