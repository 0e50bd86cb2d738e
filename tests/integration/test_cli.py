"""The ``htcgrid`` command as a user runs it: real processes, a real store, real output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import htcgrid
from htcgrid.embedded import is_serving

HTCGRID = [sys.executable, "-m", "htcgrid.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HTCGRID, *args], capture_output=True, text=True, timeout=120, check=check, env=env
    )


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """``htcgrid up`` in the background on a fresh home; yields the store path."""
    proc = subprocess.Popen(
        [*HTCGRID, "up", "--home", str(tmp_path), "--workers", "1", "--lease-ttl", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    store = tmp_path / "grid.db"
    deadline = time.monotonic() + 30
    while not is_serving(store):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "htcgrid up did not start"
        time.sleep(0.05)
    yield store
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "stopped." in output


def test_submit_wait_status_results(up: Path) -> None:
    store = f"sqlite://{up}"
    out = run(
        "submit", "htcgrid.workloads:noop", "1", '"two"', '{"x": 3}', "--wait", "--store", store
    )
    session_id, *lines = out.stdout.splitlines()
    results = sorted((json.loads(line) for line in lines), key=lambda r: r["task_id"])
    assert [r["state"] for r in results] == ["succeeded"] * 3
    assert [r["result"] for r in results] == [1, "two", {"x": 3}]
    status = run("status", session_id, "--store", store).stdout
    assert session_id in status and "3" in status
    again = [
        json.loads(line)
        for line in run("results", session_id, "--store", store).stdout.splitlines()
    ]
    assert len(again) == 3


def test_inputs_file_and_failures_are_reported(up: Path, tmp_path: Path) -> None:
    store = f"sqlite://{up}"
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"burn_ms": 1}\n\n"not a dict"\n')
    out = run(
        "submit",
        "htcgrid.workloads:mock_computation",
        "--inputs",
        str(inputs),
        "--max-attempts",
        "1",
        "--wait",
        "--store",
        store,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()[1:]]
    assert sorted(r["state"] for r in lines) == ["failed", "succeeded"]
    [failed] = [r for r in lines if r["state"] == "failed"]
    assert failed["error"]["message"]


def test_cancel_a_session_from_the_command_line(up: Path) -> None:
    store = f"sqlite://{up}"
    out = run("submit", "htcgrid.workloads:sleep_ms", "20000", "20000", "20000", "--store", store)
    session_id = out.stdout.strip()
    assert "cancelled 3 task(s)" in run("cancel", session_id, "--store", store).stdout
    with htcgrid.connect(store, start_workers=False) as grid:
        assert grid.attach(session_id).counts().cancelled == 3


def test_bad_input_gets_one_clear_line_and_changes_nothing(up: Path) -> None:
    store = f"sqlite://{up}"
    bad_json = run("submit", "htcgrid.workloads:noop", "{oops", "--store", store, check=False)
    assert bad_json.returncode != 0
    assert "not valid JSON" in bad_json.stderr and "Traceback" not in bad_json.stderr
    bad_handler = run("submit", "no handler here", "1", "--store", store, check=False)
    assert "package.module:function" in bad_handler.stderr
    unknown = run("status", "s-does-not-exist", "--store", store, check=False)
    assert unknown.returncode != 0 and "no session" in unknown.stderr
    bad_store = run("status", "--store", "ftp://x", check=False)
    assert "unknown store scheme" in bad_store.stderr
    with htcgrid.connect(store, start_workers=False) as grid:
        assert all(info.counts.total == 0 for info in grid.sessions())


def test_connect_uses_the_running_grid_instead_of_starting_workers(up: Path) -> None:
    with htcgrid.connect(f"sqlite://{up}") as grid:
        assert grid.embedded is None
        with grid.session() as session:
            assert session.submit(abs, -5).result(timeout=30) == 5


def test_connect_starts_workers_on_demand_and_stops_them(tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    os.environ["HTCGRID_HOME"] = str(env_home)
    try:
        with htcgrid.connect(workers=1) as grid:
            assert grid.embedded is not None
            assert is_serving(env_home / "grid.db")
            with grid.session() as session:
                assert list(session.map(abs, [-1, -2])) == [1, 2]
        assert not is_serving(env_home / "grid.db")
    finally:
        del os.environ["HTCGRID_HOME"]


def test_demo_runs_and_checks_every_result() -> None:
    out = run("demo", "--tasks", "500", "--workers", "1")
    assert "check passed: all 500 results are right" in out.stdout
    assert "succeeded 500" in out.stdout


def test_config_file_gives_defaults_and_env_and_flags_override_it(up: Path, tmp_path: Path) -> None:
    config = tmp_path / "htcgrid.toml"
    config.write_text(f'store = "sqlite://{up}"\n[submit]\nmax_attempts = 1\n')
    env = {**os.environ, "HTCGRID_CONFIG": str(config)}
    env.pop("HTCGRID_STORE", None)
    out = run("submit", "htcgrid.workloads:noop", "7", "--wait", env=env)
    session_id = out.stdout.splitlines()[0]
    with htcgrid.connect(f"sqlite://{up}", start_workers=False) as grid:
        assert grid.attach(session_id).info().spec.max_attempts == 1
    elsewhere = tmp_path / "other.db"
    env_store = {**env, "HTCGRID_STORE": f"sqlite://{elsewhere}"}
    assert "no session" in run("status", session_id, env=env_store, check=False).stderr
    flag = run("status", session_id, "--store", f"sqlite://{up}", env=env_store)
    assert session_id in flag.stdout


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "htcgrid.toml"
    config.write_text("[worker]\nconcurency = 4\n")
    out = run("--config", str(config), "status", check=False)
    assert out.returncode != 0 and "has no option 'concurency'" in out.stderr
