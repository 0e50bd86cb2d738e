"""The issue's end-to-end story: ``htcgrid up`` serves a grid and its API; a remote client
with a token runs the demo workload through the API; another tenant cannot see it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.api.conftest import HTCGRID, TOKEN_A, TOKEN_B, free_port, wait_ready, write_tokens


def test_a_remote_tenant_runs_the_demo_and_another_cannot_see_it(tmp_path: Path) -> None:
    port = free_port()
    tokens = write_tokens(tmp_path / "tokens.toml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    up = subprocess.Popen(
        [
            *HTCGRID,
            "up",
            "--home",
            str(tmp_path / "grid"),
            "--workers",
            "2",
            "--api-port",
            str(port),
            "--tokens",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, up)
        demo = subprocess.run(
            [*HTCGRID, "demo", "--grid", url, "--tasks", "2000"],
            env={**env, "HTCGRID_TOKEN": TOKEN_A},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "check passed: all 2,000 results are right" in demo.stdout
        found = re.search(r"session (\S+)", demo.stdout)
        assert found is not None
        session_id = found.group(1)

        def get(token: str, path: str) -> httpx.Response:
            return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})

        assert get(TOKEN_A, f"/v1/sessions/{session_id}").status_code == 200
        assert get(TOKEN_B, f"/v1/sessions/{session_id}").status_code == 404
        listed = get(TOKEN_B, "/v1/sessions").text
        assert session_id not in listed
        status_b = subprocess.run(
            [*HTCGRID, "status", "--store", url],
            env={**env, "HTCGRID_TOKEN": TOKEN_B},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status_b.returncode == 0 and session_id not in status_b.stdout
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
