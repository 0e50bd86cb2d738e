"""The SQLite grid without its wake-up watches (``HTCGRID_NO_INOTIFY=1``, as on systems
without inotify or epoll): client and workers fall back to polling, and every task still
runs once and returns, submitted one at a time and in a batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
from pathlib import Path
import htcgrid
from htcgrid.backends.wakefiles import Wake, open_watch
from htcgrid.workloads import noop

assert open_watch(Path(sys.argv[1]) / "grid.db", Wake.DONE) is None  # the switch took
with htcgrid.connect(f"sqlite:///{sys.argv[1]}/grid.db", workers=2) as grid:
    with grid.session() as session:
        one_by_one = [session.submit(noop, i).result(timeout=60) for i in range(20)]
        batch = list(session.map(noop, range(500)))
        print(json.dumps({"one_by_one": one_by_one, "batch_sum": sum(batch),
                          "counts": session.counts().succeeded}))
"""


def test_tasks_run_and_return_when_waiters_poll(tmp_path: Path) -> None:
    env = dict(os.environ, HTCGRID_NO_INOTIFY="1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["one_by_one"] == list(range(20))
    assert out["batch_sum"] == sum(range(500))
    assert out["counts"] == 520
