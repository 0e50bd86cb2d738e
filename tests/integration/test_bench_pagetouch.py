"""``bench/pagetouch.py`` (what a fresh page costs) as it is run: a real subprocess per round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PAGETOUCH = Path(__file__).resolve().parents[2] / "bench" / "pagetouch.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PAGETOUCH), *args], capture_output=True, text=True, timeout=120
    )


def test_each_round_touches_every_page_in_a_fresh_process(tmp_path: Path) -> None:
    out = tmp_path / "touch.jsonl"
    done = _run("--mb", "8", "--rounds", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["round"] for r in records] == [1, 2]
    for r in records:
        assert r["mb"] == 8 and r["seconds"] > 0
        # 2,048 pages in `seconds`: the per-page figure is that quotient, not made up
        assert abs(r["us_per_page"] - r["seconds"] * 1e6 / 2048) <= 0.01
        assert r["free_mb_before"] > 8
        assert r["machine"] and r["date"] and "bench/pagetouch.py" in r["command"]
    assert out.read_text().splitlines() == done.stdout.splitlines()


def test_bad_options_are_refused_with_a_reason() -> None:
    for args, reason in (
        (("--mb", "0"), "at least 1"),
        (("--rounds", "0"), "at least 1"),
        (("--mb", str(10**9)), "free"),
    ):
        done = _run(*args)
        assert done.returncode == 2 and reason in done.stderr
        assert done.stdout == ""
