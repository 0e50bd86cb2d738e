"""``bench/peers.py`` (the workloads on other task runners) as it is run: a real subprocess,
with the standard library's process pool, the one peer that needs nothing installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PEERS), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_process_pool_runs_the_workloads_and_prints_the_grids_record_shape(
    tmp_path: Path,
) -> None:
    out = tmp_path / "peers.jsonl"
    done = _run("--peer", "pool", "--workloads", "w1,W2", "--repeat", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    w1, w2 = (json.loads(line) for line in done.stdout.splitlines())
    assert w1["workload"] == "W1" and w1["n"] == 20_000
    assert w2["workload"] == "W2" and w2["n"] == 300
    for r in (w1, w2):
        assert r["backend"].startswith("pool (Python ") and r["workers"] == 2
        assert len(r["runs_seconds"]) == 2 and r["seconds"] in r["runs_seconds"]
        assert abs(r["tasks_per_s"] - r["n"] / r["seconds"]) < 1e-6 * r["tasks_per_s"]
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["machine"] and r["date"] and "bench/peers.py" in r["command"]
    assert out.read_text().splitlines() == done.stdout.splitlines()


@pytest.mark.parametrize(
    ("peer", "package"), [("ray", "ray"), ("dask", "distributed"), ("celery", "celery")]
)
def test_a_peer_that_is_not_installed_is_named_with_what_to_install(
    tmp_path: Path, peer: str, package: str
) -> None:
    (tmp_path / f"{package}.py").write_text("raise ImportError('not here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]))
    done = _run("--peer", peer, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{peer} is not installed" in done.stderr and f"{package!r}" in done.stderr


def test_bad_options_are_refused_with_a_reason() -> None:
    for args, reason in (
        (("--peer", "spark"), "invalid choice"),
        (("--peer", "pool", "--workloads", "W1,W9"), "unknown workloads"),
        (("--peer", "pool", "--repeat", "0"), "at least 1"),
    ):
        done = _run(*args)
        assert done.returncode == 2 and reason in done.stderr, done.stderr
        assert done.stdout == ""
