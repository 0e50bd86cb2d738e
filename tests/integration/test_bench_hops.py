"""``bench/hops.py`` (the floor under W2) as it is run: a real subprocess forking its relays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HOPS = Path(__file__).resolve().parents[2] / "bench" / "hops.py"


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
