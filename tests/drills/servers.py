"""Store servers a drill owns, so it can crash and restart them: Redis with an append-only
file, and a PostgreSQL cluster of its own (never this machine's shared server, which other
test runs may be using at the same moment).

Both listen on 127.0.0.1 on a free port, keep their files in a directory of their own, and
are stopped (and the directory removed) by :meth:`remove`, whatever state they are in.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.stores import missing_service

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` with ``appendonly yes``, ``appendfsync always``: nothing it
    acknowledged is lost, even to a SIGKILL."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_service("redis", "redis-server is not installed")
        self.binary = str(binary)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def store_url(self, name: str) -> str:
        return f"{self.url}?prefix={name}"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--daemonize", "no", "--logfile", str(self.directory / "log")]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        with redis.Redis(port=self.port, socket_connect_timeout=1) as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass  # not listening yet, or still loading the append-only file
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.log()}")
                time.sleep(0.05)

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final write; the append-only file is what survives."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def log(self) -> str:
        path = self.directory / "log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def remove(self) -> None:
        self.crash()


class PostgresCluster:
    """A cluster made with initdb in a temporary directory, run as the postgres user."""

    def __init__(self) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions or shutil.which("runuser") is None:
            missing_service("postgres", "no PostgreSQL server binaries in /usr/lib/postgresql")
        self.bin = versions[-1].parent
        self.directory = Path(tempfile.mkdtemp(prefix="htcgrid-drill-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        initdb = ["-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        self._as_postgres("initdb", *initdb, "--no-sync")

    def store_url(self, name: str) -> str:
        return f"{self.url}?schema={name}"

    def _as_postgres(self, tool: str, *args: str) -> None:
        argv = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        log = str(self.directory / "log")
        wait = ["-w", "-t", str(int(START_TIMEOUT_S))]
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", log, *wait, "-o", options, "start")
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")

    def crash(self) -> None:
        """Immediate shutdown: no checkpoint; the next start replays the WAL, as after a
        crash."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def log(self) -> str:
        path = self.directory / "log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if (self.data / "postmaster.pid").exists():
                self.crash()
        shutil.rmtree(self.directory, ignore_errors=True)
