"""Real HTTP: uvicorn serving the API on a free port, over a memory store (fast tests of the
edge: auth, validation, isolation) or over a real embedded grid with worker processes
(end-to-end through the remote client)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import htcgrid
from htcgrid import EmbeddedGrid
from htcgrid.api import ApiSettings
from htcgrid.api.auth import Role, TokenTable
from htcgrid.api.serve import ApiThread, Listen
from htcgrid.api.wire import Limits
from htcgrid.backends.memory import MemoryBackend

#: Tokens of the tests' tenants.
TOKEN_A = "token-of-desk-a"
TOKEN_B = "token-of-desk-b"
TOKEN_ADMIN = "token-of-the-admin"
TOKENS = TokenTable.of(
    {
        TOKEN_A: ("desk-a", Role.USER),
        TOKEN_B: ("desk-b", Role.USER),
        TOKEN_ADMIN: ("ops", Role.ADMIN),
    }
)
#: Small limits so the limit tests send small bodies.
LIMITS = Limits(max_body_bytes=256 * 1024, max_batch_tasks=100, max_payload_bytes=4096)
HTCGRID = [sys.executable, "-m", "htcgrid.cli"]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made by the openssl command (callers skip
    without one), and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def memory_api() -> Iterator[ApiThread]:
    """The API over an in-process memory store (no workers): the edge, fast."""
    settings = ApiSettings(backend=MemoryBackend(), tokens=TOKENS, limits=LIMITS)
    with ApiThread(settings, Listen(port=0)) as api:
        yield api


@pytest.fixture
def http(memory_api: ApiThread) -> Iterator[httpx.Client]:
    """A raw HTTP client of the memory API, as tenant desk-a."""
    with httpx.Client(base_url=memory_api.url, headers=bearer(TOKEN_A), timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedGrid]:
    home = tmp_path_factory.mktemp("grid")
    with EmbeddedGrid(
        home, workers=2, lease_ttl_s=3.0, reaper_period_s=0.2, log_dir=home / "logs"
    ) as eg:
        yield eg


@pytest.fixture(scope="module")
def grid_api(embedded: EmbeddedGrid) -> Iterator[ApiThread]:
    """The API over the embedded grid's SQLite store, with real worker processes behind it."""
    settings = ApiSettings(store_url=embedded.url, tokens=TOKENS)
    with ApiThread(settings, Listen(port=0)) as api:
        yield api


@pytest.fixture
def remote(grid_api: ApiThread) -> Iterator[htcgrid.Grid]:
    """The remote client, as tenant desk-a."""
    with htcgrid.connect(grid_api.url, token=TOKEN_A) as g:
        yield g


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``/readyz`` answers 200; fail with the process output if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the API process exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} not ready after {timeout_s} s")


def start_api(*args: str) -> subprocess.Popen[bytes]:
    """``htcgrid api ARGS`` as a subprocess, stdout and stderr merged."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])
    return subprocess.Popen(
        [*HTCGRID, "api", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop a process with SIGTERM; return its output."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace") if out else ""


def write_tokens(path: Path) -> Path:
    """A tokens file holding the hashes of TOKEN_A, TOKEN_B and TOKEN_ADMIN."""
    blocks = [
        f'[[tokens]]\ntenant = "{e.principal.tenant}"\nrole = "{e.principal.role.value}"\n'
        f'sha256 = "{e.digest.hex()}"\n'
        for e in TOKENS.entries
    ]
    path.write_text("\n".join(blocks))
    return path
