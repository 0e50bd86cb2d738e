"""``bench/w4floor.py`` (the floor under W4) as it is run: a real subprocess with real worker
processes moving megabytes through each store's blob store, and deleting its store after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.stores import missing_service

W4FLOOR = Path(__file__).resolve().parents[2] / "bench" / "w4floor.py"
REDIS_URL = "redis://127.0.0.1:6379/14"  # where bench/run.py makes its fresh stores
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(W4FLOOR), *args], capture_output=True, text=True, timeout=300
    )


def _record(done: subprocess.CompletedProcess[str], backend: str, tasks: int) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["workload"] == "w4floor" and record["backend"] == backend
    assert record["n"] == tasks and record["tasks_per_s"] > 0
    assert record["mb_per_s"] == pytest.approx(2 * record["tasks_per_s"], rel=0.01)
    assert set(record["cpu_s"]) == {"client", "workers", "store"}
    assert record["cpu_s"]["workers"] > 0, "the workers' CPU time was not counted"
    assert record["machine"] and "bench/w4floor.py" in record["command"]
    return record


def _bench_keys() -> int:
    with redis.Redis.from_url(REDIS_URL) as client:
        return sum(1 for _ in client.scan_iter(match="*bench-*", count=1000))


def _bench_schemas() -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench%'")
        return int(row.fetchone()[0])  # type: ignore[index]


def test_sqlite_moves_every_megabyte_and_checks_it() -> None:
    _record(_run("--backend", "sqlite", "--tasks", "20", "--repeat", "2"), "sqlite", 20)


def test_redis_runs_and_leaves_no_key_behind() -> None:
    try:
        before = _bench_keys()
    except redis.RedisError as exc:
        missing_service("redis", str(exc))
    record = _record(_run("--backend", "redis", "--tasks", "20", "--repeat", "1"), "redis", 20)
    assert record["cpu_s"]["store"] > 0, "the Redis server's CPU time was not counted"
    assert _bench_keys() == before


def test_postgres_runs_and_drops_its_schema() -> None:
    try:
        before = _bench_schemas()
    except psycopg.OperationalError as exc:
        missing_service("postgres", str(exc))
    _record(_run("--backend", "postgres", "--tasks", "20", "--repeat", "1"), "postgres", 20)
    assert _bench_schemas() == before


def test_bad_options_exit_2() -> None:
    done = _run("--tasks", "0")
    assert done.returncode == 2 and "at least 1" in done.stderr
