"""bench/compare.py on real JSON-lines files: what counts as a regression, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import compare

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "compare.py"


def record(workload: str = "W1", **metrics: Any) -> dict[str, Any]:
    """A line as bench/run.py and ``htcgrid bench`` write it, with the given metrics."""
    base: dict[str, Any] = {
        "workload": workload,
        "backend": "sqlite",
        "n": 20_000,
        "seconds": 0.5,
        "p50_ms": 200.0,
        "p99_ms": 280.0,
        "tasks_per_s": 40_000.0,
        "peak_rss_mb": {"client": 74.0, "workers": [31.0, 30.0], "executors": [24.0, 24.0]},
        "workers": 2,
        "layout": "2 worker x 1 executor",
        "codec": "pickle",
        "grid": "fresh embedded",
        "grid_dir": "/tmp",
    }
    return base | metrics


def write(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_20_percent_drop_in_throughput_fails(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(tasks_per_s=40_000.0, seconds=0.5))
    new = write(tmp_path / "new.jsonl", record(tasks_per_s=32_000.0, seconds=0.5))
    proc = run(old, new)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if line.rstrip().endswith("WORSE")]
    assert len(flagged) == 1
    assert "tasks_per_s" in flagged[0] and "-20.0%" in flagged[0]


def test_a_10_percent_drop_passes(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(tasks_per_s=40_000.0, p50_ms=200.0))
    new = write(tmp_path / "new.jsonl", record(tasks_per_s=36_000.0, p50_ms=220.0))
    proc = run(old, new)
    assert proc.returncode == 0, proc.stdout
    assert "WORSE" not in proc.stdout
    assert "0 of " in proc.stdout


def test_improvements_are_not_flagged(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(), record("W3", efficiency=0.80))
    better = record(tasks_per_s=80_000.0, seconds=0.25, p50_ms=100.0, p99_ms=140.0)
    better["peak_rss_mb"] = {"client": 40.0, "workers": [20.0], "executors": [20.0]}
    new = write(tmp_path / "new.jsonl", better, record("W3", efficiency=0.99))
    proc = run(old, new)
    assert proc.returncode == 0, proc.stdout
    assert "WORSE" not in proc.stdout


def test_smaller_is_better_metrics_fail_when_they_rise(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(p99_ms=100.0))
    new = write(tmp_path / "new.jsonl", record(p99_ms=120.0))
    rows, _ = compare.compare(compare.load(old), compare.load(new), 0.15)
    worse = [r.metric for r in rows if r.is_worse]
    assert worse == ["p99_ms"]
    big = record()
    big["peak_rss_mb"] = {"client": 74.0, "workers": [31.0, 40.0], "executors": [24.0]}
    rows, _ = compare.compare([record()], [big], 0.15)
    assert [r.metric for r in rows if r.is_worse] == ["worker peak RSS MB"]


def test_the_threshold_is_an_option(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(tasks_per_s=40_000.0))
    new = write(tmp_path / "new.jsonl", record(tasks_per_s=32_000.0))
    assert run(old, new, "--threshold", "0.25").returncode == 0
    assert run(old, new, "--threshold", "0.05").returncode == 1


def test_lines_on_one_side_are_listed_not_errors(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record("W1"), record("W4", mb_per_s=500.0))
    new = write(tmp_path / "new.jsonl", record("W1"), record("W2", n=300))
    proc = run(old, new)
    assert proc.returncode == 0, proc.stdout
    assert "only in old: W4" in proc.stdout
    assert "only in new: W2" in proc.stdout


def test_lines_match_only_what_was_measured_alike(tmp_path: Path) -> None:
    """Another layout, backend or task count is another measurement, never compared."""
    old = write(tmp_path / "old.jsonl", record(tasks_per_s=40_000.0))
    other = [
        record(tasks_per_s=1.0, layout="1 worker x 2 executor"),
        record(tasks_per_s=1.0, backend="redis"),
        record(tasks_per_s=1.0, n=200),
    ]
    new = write(tmp_path / "new.jsonl", *other)
    proc = run(old, new)
    assert proc.returncode == 0, proc.stdout
    assert "nothing compared" in proc.stdout


def test_the_last_line_of_a_match_counts(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", record(tasks_per_s=10_000.0), record(tasks_per_s=40_000.0))
    new = write(tmp_path / "new.jsonl", record(tasks_per_s=30_000.0))
    assert run(old, new).returncode == 1


def test_churn_that_loses_a_task_fails_whatever_the_speed(tmp_path: Path) -> None:
    churn = {"kill_every_s": 2.0, "lease_ttl_s": 2.0, "reaper_period_s": 0.5}
    old = write(
        tmp_path / "old.jsonl",
        record("W6", n=10_000, all_succeeded=True, detect_s={"max": 2.4}, **churn),
    )
    new = write(
        tmp_path / "new.jsonl",
        record("W6", n=10_000, all_succeeded=False, detect_s={"max": 2.4}, **churn),
    )
    proc = run(old, new)
    assert proc.returncode == 1
    assert "all tasks succeeded" in proc.stdout and "WORSE" in proc.stdout
    slow = write(
        tmp_path / "slow.jsonl",
        record("W6", n=10_000, all_succeeded=True, detect_s={"max": 4.0}, **churn),
    )
    proc = run(old, slow)
    assert proc.returncode == 1
    assert "W6 detect s (max)" in proc.stdout


def test_against_last_takes_the_newest_line_of_a_directory(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write(results / "a.jsonl", record(tasks_per_s=40_000.0, date="2026-01-02T00:00:00+00:00"))
    write(results / "b.jsonl", record(tasks_per_s=20_000.0, date="2026-01-01T00:00:00+00:00"))
    new = write(
        results / "new.jsonl", record(tasks_per_s=30_000.0, date="2026-01-03T00:00:00+00:00")
    )
    proc = run("--against-last", results, new)
    assert proc.returncode == 1, proc.stdout  # against a.jsonl's 40,000 (newer), not 20,000
    assert "40,000" in proc.stdout and "30,000" in proc.stdout


def test_bad_input_exits_2(tmp_path: Path) -> None:
    good = write(tmp_path / "old.jsonl", record())
    broken = tmp_path / "new.jsonl"
    broken.write_text('{"workload": "W1"\n')
    proc = run(good, broken)
    assert proc.returncode == 2
    assert "not JSON" in proc.stderr
    proc = run(good, tmp_path / "missing.jsonl")
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
