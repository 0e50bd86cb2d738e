"""Real worker processes (``python -m htcgrid.worker``) against a SQLite file in tmp_path.

Tasks are submitted through the backend port directly; handlers live in ``handlers.py`` next
to this file, which worker processes import as ``handlers`` (it is put on their PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from htcgrid import codec
from htcgrid.backends import Backend, open_backend
from htcgrid.core.handlers import import_handler
from htcgrid.core.ids import new_session_id
from htcgrid.core.model import Codec, NewTask, SessionSpec, TaskRecord
from htcgrid.reaper import Reaper

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"


def wait_until(pred: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred`` every 20 ms; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def task(fn: str, value: Any, c: Codec = Codec.PICKLE, **kw: Any) -> NewTask:
    """A task running ``handlers.<fn>`` on ``value``."""
    return NewTask(
        handler=import_handler(f"handlers:{fn}"), codec=c, payload=codec.encode(value, c), **kw
    )


def result(record: TaskRecord) -> Any:
    return codec.decode(record.result or b"", record.codec)


@dataclass
class Grid:
    """A store plus the worker processes a test started on it."""

    url: str
    backend: Backend
    tmp_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    reaper: Reaper | None = None

    def session(self, **spec: Any) -> str:
        sid = new_session_id()
        self.backend.create_session(sid, SessionSpec(**spec), time.time())
        return sid

    def submit(self, sid: str, tasks: Sequence[NewTask]) -> list[str]:
        return self.backend.submit(sid, tasks, time.time())

    def records(self, ids: Sequence[str]) -> list[TaskRecord]:
        return self.backend.tasks(ids)

    def wait_finished(self, sid: str, n: int, timeout_s: float = 30.0) -> None:
        wait_until(
            lambda: self.backend.counts(sid).finished >= n,
            timeout_s,
            f"{n} finished tasks in {sid} (logs: {self.logs()[-3000:]})",
        )

    def worker(self, *args: str, lease_ttl_s: float = 2.0) -> subprocess.Popen[bytes]:
        """Start ``python -m htcgrid.worker`` on this store; its output goes to a log file."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC)])
        env["HTCGRID_TEST_RECORD"] = str(self.tmp_path / "record.txt")
        log = (self.tmp_path / f"worker-{len(self.procs)}.log").open("wb")
        cmd = [sys.executable, "-m", "htcgrid.worker", "--store", self.url]
        cmd += ["--lease-ttl", str(lease_ttl_s), "--log-level", "DEBUG", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def start_reaper(self) -> None:
        self.reaper = Reaper(self.backend, period_s=0.2).start()

    def recorded(self) -> list[str]:
        path = self.tmp_path / "record.txt"
        return path.read_text().splitlines() if path.exists() else []

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Grid]:
    url = f"sqlite://{tmp_path / 'grid.db'}"
    g = Grid(url, open_backend(url), tmp_path)
    try:
        yield g
    finally:
        if g.reaper is not None:
            g.reaper.stop()
        for p in g.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        g.backend.close()
