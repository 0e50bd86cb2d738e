"""``bench/hops.py`` (the floor under W2) as it is run: a real subprocess forking its relays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.stores import missing_service

HOPS = Path(__file__).resolve().parents[2] / "bench" / "hops.py"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the server hops.py measures


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HOPS), *args], capture_output=True, text=True, timeout=120
    )


def test_the_process_variants_print_one_record_each_and_finish() -> None:
    done = _run("--rounds", "50", "--only", "pipe,processes")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["variant"] for r in records] == ["pipe", "processes"]
    for r in records:
        assert r["rounds"] == 50
        assert 0 < r["p50_us"] <= r["p99_us"]
        assert r["machine"] and r["date"] and "bench/hops.py" in r["command"]


def test_an_unknown_variant_is_refused_with_the_choices() -> None:
    done = _run("--only", "pipe,teleport")
    assert done.returncode == 2
    assert "teleport" in done.stderr and "redis-w2" in done.stderr
    assert done.stdout == ""


def test_the_sqlite_variant_commits_through_a_real_file_and_finishes() -> None:
    done = _run("--rounds", "50", "--only", "sqlite-w2")
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["variant"] == "sqlite-w2" and record["rounds"] == 50
    assert 0 < record["p50_us"] <= record["p99_us"]


def test_the_postgres_variant_finishes_and_leaves_no_table() -> None:
    done = _run("--rounds", "50", "--only", "postgres-w2")
    assert done.returncode == 0, done.stderr
    if "left out" in done.stderr:
        missing_service("postgres", done.stderr.strip())
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["variant"] == "postgres-w2" and record["rounds"] == 50
    assert 0 < record["p50_us"] <= record["p99_us"]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'hops_%'")
        assert left.fetchone() == (0,)
