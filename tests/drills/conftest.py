"""What every drill needs: bounded waits, processes that are always cleaned up, test hosts.

Processes started through :class:`Processes` write their output to a log file in the test's
tmp_path and are stopped when the test ends, pass or fail (SIGTERM, then SIGKILL). Hosts
made by ``make_hosts`` are removed likewise, so a failed drill leaves no namespace behind.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.drills.network import Host, require_netns

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
#: Environment variables read by ``tests.drills.handlers``.
RECORD_ENV = "HTCGRID_DRILL_RECORD"
HOST_ENV = "HTCGRID_DRILL_HOST"


def wait_until(
    pred: Callable[[], bool], timeout_s: float, what: str, *, interval_s: float = 0.05
) -> float:
    """Poll ``pred`` until it holds; fail the test after ``timeout_s``. Return the seconds
    it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - start


def drill_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH (workers import
    ``tests.drills.handlers`` by name) plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SRC)])
    env.update(extra)
    return env


_STATS_RE = re.compile(r"worker (\S+) stopped: WorkerStats\(([^)]*)\)")


def worker_stats(log: str) -> dict[str, dict[str, int]]:
    """Each worker's final ``WorkerStats`` line in ``log``, by worker id."""
    found: dict[str, dict[str, int]] = {}
    for worker_id, fields in _STATS_RE.findall(log):
        pairs = (item.split("=") for item in fields.split(", "))
        found[worker_id] = {k: int(v) for k, v in pairs}
    return found


@dataclass
class Proc:
    """A process a drill started, with the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stacks(self) -> str:
        """Where each of the process's threads is now (py-spy), for a failure message: a
        drill that finds a call hanging should say which call."""
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None or self.popen.poll() is not None:
            return "(no stacks: py-spy is missing or the process has exited)"
        done = subprocess.run(
            [spy, "dump", "--pid", str(self.pid)], capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a worker drains), wait up to ``timeout_s``; fail if it did not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            pytest.fail(f"{self.name} did not exit within {timeout_s:g} s of SIGTERM")


@dataclass
class Processes:
    """Processes started by one test; :meth:`close` ends those still running."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT
    ) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def logs(self, tail: int = 4000) -> str:
        """The end of every log, for failure messages."""
        return "\n".join(f"--- {p.name}\n{p.log()[-tail:]}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    try:
        yield group
    finally:
        group.close()


def free_host_indices(n: int) -> list[int]:
    """``n`` subnet indices 10.231.<i>.0/24 that no interface here uses, picked at random
    so drills of concurrent test runs do not collide."""
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    used = {int(m) for m in re.findall(r"inet 10\.231\.(\d+)\.", out)}
    return random.sample(sorted(set(range(1, 255)) - used), n)


@pytest.fixture
def make_hosts() -> Iterator[Callable[[int], list[Host]]]:
    """``make_hosts(n)``: n test hosts (network namespaces), removed when the test ends."""
    made: list[Host] = []

    def make(n: int) -> list[Host]:
        require_netns()
        for index in free_host_indices(n):
            made.append(Host(index))
        return made[-n:]

    try:
        yield make
    finally:
        for host in made:
            host.remove()
