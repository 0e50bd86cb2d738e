"""``bench/w3timeline.py`` (where W3's time goes) as it is run: a real grid of worker processes
on a fresh SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

W3TIMELINE = Path(__file__).resolve().parents[2] / "bench" / "w3timeline.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(W3TIMELINE), *args], capture_output=True, text=True, timeout=180
    )


def test_a_run_splits_each_executors_time_into_parts_that_add_up() -> None:
    done = _run("--tasks", "40")
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["backend"] == "sqlite" and record["tasks"] == 40
    executors = record["executors"]
    assert sum(e["tasks"] for e in executors) == 40
    for e in executors:
        parts = e["burn_s"] + e["stretch_s"] + e["gaps_s"] + e["start_s"] + e["tail_s"]
        assert abs(parts - record["seconds"]) < 0.01  # the parts are the whole wall time
        assert e["burn_s"] == pytest.approx(e["tasks"] * 0.01)
        assert e["stretch_s"] >= 0 and e["start_s"] > 0
    assert abs(sum(record["share"].values()) - 1.0) < 0.01
    assert record["share"]["burn_s"] == pytest.approx(
        record["efficiency"] * 2 / len(executors), abs=1e-3
    )
    assert record["machine"] and record["date"] and "bench/w3timeline.py" in record["command"]


def test_bad_options_are_refused_with_a_reason() -> None:
    for args, reason in ((("--repeat", "0"), "at least 1"), (("--tasks", "1"), "at least 2")):
        done = _run(*args)
        assert done.returncode == 2 and reason in done.stderr
        assert done.stdout == ""
