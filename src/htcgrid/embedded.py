"""The embedded grid: a store, a reaper and local worker processes on one machine.

``htcgrid up`` runs one in the foreground; :func:`htcgrid.connect` starts one on demand when
no grid serves a SQLite store. A lock file next to a SQLite store says whether a grid serves
it, so a second ``up`` (or a client) finds the running one instead of starting workers twice.
With a shared store (Redis, PostgreSQL) every machine runs its own ``htcgrid up --store URL``:
their workers share the work and their reapers are safe side by side.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from htcgrid.backends.base import Backend
from htcgrid.backends.registry import default_home, open_backend
from htcgrid.core.errors import GridError, InvalidInput
from htcgrid.reaper import Reaper

log = logging.getLogger(__name__)


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def is_serving(store: Path) -> bool:
    """True when some process (an ``htcgrid up`` or a client's on-demand grid) serves ``store``."""
    path = lock_path(store)
    if not path.exists():
        return False
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


class AlreadyServing(GridError):
    """Another process already serves this store."""


class EmbeddedGrid:
    """Store + reaper + ``workers`` worker processes, each with ``concurrency`` executors.

    Worker processes that die are restarted (their tasks come back through the reaper), and
    :meth:`stop` drains them: no new claims, in-flight attempts finish and are recorded.
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        store_path: Path | None = None,
        store_url: str | None = None,
        workers: int | None = None,
        concurrency: int = 1,
        lease_ttl_s: float = 15.0,
        reaper_period_s: float = 1.0,
        allow_pickle: bool = True,
        log_dir: Path | None = None,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        if store_url is not None and store_url.startswith("sqlite://"):
            store_path, store_url = Path(store_url.removeprefix("sqlite://")), None
        if store_path is None and store_url is None:
            store_path = (home or default_home()) / "grid.db"
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1 or concurrency < 1:
            raise InvalidInput("workers and concurrency must be at least 1")
        #: the SQLite file this grid serves alone, or None for a shared store (redis, postgres)
        self.store_path = store_path.resolve() if store_path is not None else None
        self.url = f"sqlite://{self.store_path}" if self.store_path else str(store_url)
        self.workers = n
        self.concurrency = concurrency
        self.lease_ttl_s = lease_ttl_s
        self.reaper_period_s = reaper_period_s
        self.allow_pickle = allow_pickle
        self.log_dir = log_dir
        self.worker_args = worker_args
        self.restarts = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._lock_file: IO[str] | None = None
        self._backend: Backend | None = None
        self._reaper: Reaper | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def __enter__(self) -> EmbeddedGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the worker processes (the reaper runs in this process)."""
        return [p.pid for p in self._procs]

    def start(self) -> EmbeddedGrid:
        """Take the store's lock (SQLite only: shared stores are served by many machines),
        open it, start the reaper and the workers."""
        if self.store_path is not None:
            self._lock(self.store_path)
        self._backend = open_backend(self.url)
        self._reaper = Reaper(self._backend, self.reaper_period_s).start()
        self._procs = [self._spawn(i) for i in range(self.workers)]
        self._monitor = threading.Thread(
            target=self._supervise, name="htcgrid-supervisor", daemon=True
        )
        self._monitor.start()
        return self

    def _lock(self, store: Path) -> None:
        store.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_path(store).open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise AlreadyServing(f"a grid already serves {store}") from None

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "htcgrid.worker",
            "--store",
            self.url,
            "--concurrency",
            str(self.concurrency),
            "--lease-ttl",
            str(self.lease_ttl_s),
            "--parent-pid",
            str(os.getpid()),
            *([] if self.allow_pickle else ["--no-pickle"]),
            *self.worker_args,
        ]
        env = dict(os.environ)
        # workers import handlers by name: give them the client's import path
        paths = [p for p in [os.getcwd(), *sys.path] if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        out: IO[bytes] | int | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            f = (self.log_dir / f"worker-{index}.log").open("ab")
            self._logs.append(f)
            out = f
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        """Restart worker processes that died, with a pause so a crash loop cannot spin."""
        while not self._stopping.wait(0.5):
            for i, p in enumerate(self._procs):
                if p.poll() is not None and not self._stopping.is_set():
                    log.warning(
                        "worker %d (pid %d) exited with %s; restarting", i, p.pid, p.returncode
                    )
                    self.restarts += 1
                    self._procs[i] = self._spawn(i)

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Drain workers (SIGTERM, then SIGKILL after ``drain_timeout_s``), stop the reaper,
        release the store. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + drain_timeout_s
        for p in self._procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._reaper is not None:
            self._reaper.stop()
        if self._backend is not None:
            self._backend.close()
        for f in self._logs:
            f.close()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
