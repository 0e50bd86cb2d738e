"""``htcgrid bench`` as users run it: a real subprocess on real grids, its JSON lines parsed.

Task counts are scaled down (``--scale``) and W6 kills a worker every second instead of
every two: the workloads are the real ones, only smaller. No timing is asserted beyond
"positive" and the bounds the grid's own settings give W6's detection time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import htcgrid
from htcgrid import EmbeddedGrid
from htcgrid.cli.main import main

HTCGRID = [sys.executable, "-m", "htcgrid.cli"]
#: Keys every record has, whatever the workload (those bench/report.py reads among them).
RECORD_KEYS = {
    "workload",
    "backend",
    "n",
    "seconds",
    "tasks_per_s",
    "peak_rss_mb",
    "cpu_s",
    "workers",
    "layout",
    "codec",
    "grid",
    "repeat",
    "runs_seconds",
    "date",
    "command",
    "machine",
}
TOKEN = "token-of-the-bench-tests"


def bench(*args: str, env: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Run ``htcgrid bench ARGS``; its records (stdout) and its progress (stderr)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])
    proc = subprocess.run(
        [*HTCGRID, "bench", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_w1_w2_on_a_fresh_embedded_grid() -> None:
    records, progress = bench("W1", "W2", "--scale", "0.01", "--repeat", "1")
    assert [r["workload"] for r in records] == ["W1", "W2"]
    w1, w2 = records
    for r in records:
        assert r.keys() >= RECORD_KEYS
        assert r["backend"] == "sqlite"
        assert r["grid"] == "fresh embedded"
        assert r["layout"] == "2 worker x 1 executor"
        assert r["tasks_per_s"] > 0
        assert r["runs_seconds"] == [r["seconds"]]
        assert r["runs_cpu_s"] == [r["cpu_s"]] and r["runs_p50_ms"] == [r["p50_ms"]]
        assert r["peak_rss_mb"]["client"] > 0
        assert len(r["peak_rss_mb"]["workers"]) == 2
        cpu = r["cpu_s"]  # the grid's CPU is split into its agents' and their executors'
        assert cpu["grid_agents"] >= 0 and cpu["grid_executors"] >= 0  # 10 ms ticks
        assert abs(cpu["grid"] - cpu["grid_agents"] - cpu["grid_executors"]) <= 0.02
        assert r["command"] == "htcgrid bench W1 W2 --repeat 1 --scale 0.01"
    assert w1["n"] == 200  # 20,000 scaled
    assert w2["n"] == 3  # 300 scaled
    assert 0 < w2["p50_ms"] <= w2["p99_ms"]
    assert "W1 sqlite 2 worker x 1 executor run 1/1" in progress


def test_w5_samples_memory_while_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    (record,), _ = bench("W5", "--scale", "0.001", "--repeat", "1", "--out", str(out))
    assert json.loads(out.read_text()) == record  # --out appends the same line
    assert record["n"] == 1000
    assert record["window"] == 50_000
    assert record["latency_sample_every"] == 100
    assert 0 < record["p50_ms"] <= record["p99_ms"]
    sampled = record["rss_sampled_mb"]
    for role in ("client", "workers", "executors"):
        values = sampled[role]
        assert 0 < values["first"] <= values["max"] and values["last"] <= values["max"]
    assert sampled["samples"] >= 2  # one before the run, one after
    columns = sampled["timeline_columns"]
    assert columns[:2] == ["seconds", "done"]
    assert sampled["timeline"][0][1] == 0
    assert sampled["timeline"][-1][1] == 1000
    assert "store_rss_mb" not in record  # SQLite has no server process
    assert record["store_file_mb"] > 0  # but a file, with a thousand tasks in it


def test_w6_kills_workers_and_every_task_still_succeeds_once() -> None:
    (r,), _ = bench("W6", "--scale", "0.1", "--repeat", "1", "--kill-every", "1")
    assert r["n"] == 1000
    assert r["all_succeeded"] is True
    assert r["accepted_completions"] == 1000
    assert r["wrong_results"] == 0 and r["failed_tasks"] == 0
    assert r["kills"] >= 1
    assert r["restarts"] >= r["kills"] - 1  # the last kill's restart may come after the run
    assert r["lease_ttl_s"] == 2.0 and r["reaper_period_s"] == 0.5
    assert r["attempts_total"] >= 1000 + r["retried_tasks"]
    # the first kill lands one second into a run of ~2.5 s: its worker held attempts
    assert r["kills_holding_tasks"] >= 1
    assert r["undetected_kills"] == 0
    taken_back = sum(r["attempts_taken_back_each"])
    assert r["retried_tasks"] >= 1
    assert r["lost_attempts"] >= taken_back
    # a lease outlives its dead worker by at most the TTL; the reaper looks every 0.5 s
    assert 0.3 < r["detect_s"]["max"] < r["lease_ttl_s"] + r["reaper_period_s"] + 1.0
    # killed processes take their CPU time with them: the grid's share cannot be known
    cpu = r["cpu_s"]
    assert cpu["grid"] is cpu["grid_agents"] is cpu["grid_executors"] is cpu["foreign"] is None
    assert cpu["client"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["W9"], "unknown workload"),
        (["W1", "--store", "sqlite:///x.db", "--api", "http://127.0.0.1:1"], "exclude"),
        (["W1", "--repeat", "0"], "--repeat"),
        (["W1", "--scale", "0"], "--scale"),
        (["W6", "--api", "http://127.0.0.1:1", "--token", "t"], "W6"),
        (["W7", "--store", "sqlite:///x.db", "--workers", "0"], "W7"),
        (["W1", "--workers", "0"], "--store"),
        (["W1", "--api", "http://127.0.0.1:1"], "--token"),
        (["W1", "--api", "http://127.0.0.1:1", "--token", "t", "--workers", "2"], "--workers"),
    ],
)
def test_bad_options_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", *args], env={"HTCGRID_TOKEN": ""})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_options_exit_2_from_a_real_process() -> None:
    proc = subprocess.run(
        [*HTCGRID, "bench", "W1", "W42"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "unknown workload(s) W42" in proc.stderr
    assert proc.stdout == ""


# -- a grid that outlives the benchmark: its store, its API ---------------------------------
@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedGrid]:
    home = tmp_path_factory.mktemp("running-grid")
    with EmbeddedGrid(home, workers=2, log_dir=home / "logs") as eg:
        yield eg


def sessions_of(grid: EmbeddedGrid) -> list[str]:
    with htcgrid.connect(grid.url, start_workers=False) as g:
        return [s.session_id for s in g.sessions()]


def test_store_mode_uses_the_stores_own_workers_and_cleans_up(running: EmbeddedGrid) -> None:
    before = sessions_of(running)
    records, progress = bench(
        "W1", "W3", "--store", running.url, "--workers", "0", "--scale", "0.01", "--repeat", "1"
    )
    w1, w3 = records
    for r in records:
        assert r["grid"] == f"store {running.url}"
        assert r["layout"] == "the store's own workers"
        assert r["backend"] == "sqlite"
        assert r["workers"] == 2  # the executors the warm-up found
        assert r["peak_rss_mb"]["workers"] == []  # not ours to measure
    assert w1["n"] == 200 and w3["n"] == 20
    assert 0 < w3["efficiency"] <= 1.05
    assert sessions_of(running) == before  # the bench's sessions are deleted afterwards
    assert "fresh sessions per run" in progress


def test_api_mode_never_shows_the_token(running: EmbeddedGrid) -> None:
    pytest.importorskip("uvicorn")
    from htcgrid.api import ApiSettings
    from htcgrid.api.auth import Role, TokenTable
    from htcgrid.api.serve import ApiThread, Listen

    tokens = TokenTable.of({TOKEN: ("bench", Role.USER)})
    with ApiThread(ApiSettings(store_url=running.url, tokens=tokens), Listen(port=0)) as api:
        before = sessions_of(running)
        records, progress = bench(
            "W1",
            "W2",
            "--api",
            api.url,
            "--scale",
            "0.01",
            "--repeat",
            "1",
            env={"HTCGRID_TOKEN": TOKEN},
        )
        after = sessions_of(running)
    assert [r["n"] for r in records] == [200, 3]
    for r in records:
        assert r["backend"] == "api"
        assert r["grid"] == f"api {api.url}"
        assert r["layout"] == "the grid's own workers"
        assert r["tasks_per_s"] > 0
    assert TOKEN not in json.dumps(records) and TOKEN not in progress
    assert after == before


def test_passwords_never_reach_the_record() -> None:
    from htcgrid.benchmark.driver import Target, redact
    from htcgrid.cli.bench import _command

    url = "postgresql://grid:s3cret@db:5432/grid?password=s3cret&schema=x"
    assert "s3cret" not in redact(url)
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("sqlite:///tmp/grid.db") == "sqlite:///tmp/grid.db"
    assert "s3cret" not in Target(mode="store", url=url).grid
    command = _command(["W1"], url, None, 0, None, 3, 1.0, "pickle")
    assert "s3cret" not in command and "--workers 0" in command
