"""``bench/w3floor.py`` (the ceiling over W3) as it is run: a real subprocess forking burners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

W3FLOOR = Path(__file__).resolve().parents[2] / "bench" / "w3floor.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(W3FLOOR), *args], capture_output=True, text=True, timeout=120
    )


def test_each_variant_burns_every_task_and_prints_one_record() -> None:
    done = _run("--tasks", "20")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["variant"] for r in records] == ["bare", "fed"]
    for r in records:
        assert r["tasks"] == 20 and r["task_ms"] == 10.0
        # 20 burns of 10 ms on 2 processes cannot take less than 0.1 s of wall time
        assert r["seconds"] >= 0.1 and 0 < r["efficiency"] <= 1.0
        assert r["foreign_cpu_s"] >= 0
        assert r["machine"] and r["date"] and "bench/w3floor.py" in r["command"]


def test_bad_options_are_refused_with_a_reason() -> None:
    for args, reason in (
        (("--only", "bare,magic"), "magic"),
        (("--tasks", "7"), "multiple of 2"),
        (("--repeat", "0"), "at least 1"),
    ):
        done = _run(*args)
        assert done.returncode == 2 and reason in done.stderr
        assert done.stdout == ""
