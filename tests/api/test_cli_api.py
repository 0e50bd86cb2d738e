"""The command line of the API: ``htcgrid token``, ``htcgrid up`` serving the API with its
own admin token, and the session commands pointed at an API URL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import htcgrid
from htcgrid.api import ApiSettings
from htcgrid.api.auth import load_tokens
from htcgrid.api.serve import ApiThread, Listen
from htcgrid.backends.memory import MemoryBackend
from htcgrid.client.http import HttpStore
from tests.api.conftest import HTCGRID, TOKEN_A, TOKENS, free_port, self_signed_certificate


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HTCGRID, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_token_create_prints_the_token_once_and_stores_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    user = run("token", "create", "--tenant", "desk-a", "--file", str(path))
    admin = run("token", "create", "--tenant", "ops", "--admin", "--file", str(path))
    assert user.returncode == admin.returncode == 0, user.stderr + admin.stderr
    secret = user.stdout.strip()
    assert secret.startswith("htc_") and secret not in path.read_text()
    assert "desk-a" in user.stderr and str(path) in user.stderr
    who = load_tokens(path).authenticate(secret)
    assert who is not None and who.tenant == "desk-a" and not who.is_admin
    listed = run("token", "list", "--file", str(path)).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["desk-a", "user"], ["ops", "admin"]]
    bad = run("token", "create", "--tenant", "has space", "--file", str(path))
    assert bad.returncode != 0 and "tenant must be" in bad.stderr


def test_api_needs_a_tokens_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HTCGRID_API_TOKENS"}
    done = run("api", "--store", "memory://", env=env)
    assert done.returncode == 2 and "--tokens" in done.stderr


@pytest.mark.e2e
def test_up_serves_the_api_with_an_admin_token_in_its_home(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*HTCGRID, "up", "--home", str(tmp_path), "--workers", "1", "--api-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "HTCGRID_API_TOKENS"},
    )
    token_file = tmp_path / "api-token"
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "htcgrid up served no API"
            if token_file.exists() and token_file.read_text().strip():
                try:
                    grid = htcgrid.connect(url, token=token_file.read_text().strip())
                    break
                except htcgrid.BackendUnavailable:
                    pass
            time.sleep(0.1)
        assert token_file.stat().st_mode & 0o777 == 0o600
        with grid, grid.session(codec="msgpack") as session:
            assert session.submit("htcgrid.workloads:noop", 41).result(timeout=60) == 41
            sid = session.session_id
        env = dict(os.environ, HTCGRID_TOKEN=token_file.read_text().strip())
        status = run("status", "--store", url, env=env)
        assert status.returncode == 0 and sid in status.stdout, status.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert f"API on {url} (admin token in {token_file})" in output


def test_the_remote_client_needs_no_server_dependency() -> None:
    """The client imports only the wire schemas of the API package, not FastAPI."""
    code = (
        "import sys, htcgrid.client.http; print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_private_ca_bundle(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    settings = ApiSettings(backend=MemoryBackend(), tokens=TOKENS)
    listen = Listen(port=0, ssl_certfile=str(cert), ssl_keyfile=str(key))
    with ApiThread(settings, listen) as api:
        assert api.url.startswith("https://")
        with htcgrid.connect(api.url, token=TOKEN_A, verify=str(cert)) as grid:
            assert grid.session(name="over tls").info().spec.name == "over tls"
        with pytest.raises(htcgrid.BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            HttpStore(api.url, TOKEN_A, patience_s=0.2)
