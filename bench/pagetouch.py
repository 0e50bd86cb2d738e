"""What a page of fresh memory costs on this machine: the first time the machine ever hands it
out, and again after another process gave it back. One JSON line per round.

    python bench/pagetouch.py
    python bench/pagetouch.py --mb 4096 --rounds 3 --out bench/results/pagetouch.jsonl

Each round starts a fresh process that maps ``--mb`` megabytes of anonymous memory, writes
one byte to each 4 KiB page and exits, and reports the time a page took. On bare metal the
rounds cost the same. A virtual machine whose host backs guest memory only when the guest
first touches it (as Firecracker does) makes a page the guest has never used dearer, every
time, than one a process used and freed before: the host has to find and map a page of its
own first. A round slower than the rounds after it, by a large factor, shows that.

It is why a set's first W4 run (a megabyte in and out per task, gigabytes through the store
server and the grid's processes) is slower than the runs after it: docs/benchmarks.md, "The
twelfth set".
"""

from __future__ import annotations

import argparse
import json
import mmap
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from htcgrid.benchmark.measure import append_line, machine

PAGE = 4096


def touch(mb: int) -> float:
    """Seconds to map ``mb`` MB and write a byte to each of its pages, in this process."""
    start = time.perf_counter()
    memory = mmap.mmap(-1, mb << 20)
    for offset in range(0, mb << 20, PAGE):
        memory[offset] = 1
    seconds = time.perf_counter() - start
    memory.close()
    return seconds


def free_mb() -> int:
    """MemFree of /proc/meminfo: memory no process and no cache holds, in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) // 1024
    return 0


def round_in_child(mb: int) -> dict[str, Any]:
    """One round in a fresh process, so that it starts with no memory of its own."""
    free = free_mb()
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    code += f"import pagetouch; print(pagetouch.touch({mb}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = float(out.stdout)
    pages = (mb << 20) // PAGE
    return {
        "mb": mb,
        "seconds": round(seconds, 6),
        "us_per_page": round(seconds * 1e6 / pages, 2),
        "free_mb_before": free,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=2048, help="memory each round touches")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each a fresh process")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.mb < 1:
        parser.error("--mb must be at least 1")
    if args.mb >= free_mb():
        parser.error(f"--mb {args.mb} is not below the {free_mb()} MB this machine has free")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python bench/pagetouch.py " + shlex.join(argv or sys.argv[1:]),
    }
    for i in range(args.rounds):
        record = {"variant": "pagetouch", "round": i + 1, **round_in_child(args.mb), **stamp}
        line = json.dumps(record)
        print(line)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
