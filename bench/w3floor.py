"""The ceiling over W3: how efficient 2,000 ten-millisecond CPU burns can be on this machine
with no grid at all; one JSON line per variant.

    python bench/w3floor.py
    python bench/w3floor.py --repeat 3 --out bench/results/w3floor.jsonl

W3 (docs/benchmarks.md) runs 2,000 tasks that each burn 10 ms of their thread's CPU time on
2 workers, and scores efficiency = (2,000 x 10 ms / 2) / wall. On a 2-core machine every CPU
second anything else spends -- the grid's agents, the client, the store, and the machine's
own services -- comes out of the executors' share. These variants burn the same tasks with
the plainest Python, so a W3 efficiency can be read against what the machine allows:

- ``bare``: two processes each burn 1,000 tasks back to back: no hand-over, no result, only
  the machine's own services to share the cores with;
- ``fed``: a parent process hands the tasks to two child processes over pipes, five at a
  time as the grid's agents do, and reads the answers back, one message per five: the least
  a dispatcher costs (the grid also writes every claim and completion to its store).

Each line has the efficiency, the wall time, and ``foreign_cpu_s``: what the rest of the
machine spent meanwhile (all CPU time minus the variant's own processes).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from htcgrid.benchmark.measure import append_line, machine
from htcgrid.workloads import burn_cpu_ms

TASKS = 2000  # W3's count; --tasks takes fewer for a quick look
TASK_MS = 10.0
WORKERS = 2
BATCH = 5  # tasks per hand-over, as a W3 agent claims (half of 0.1 s of queued work)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent, all cores, idle and I/O wait left out."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def burn(n: int) -> None:
    for _ in range(n):
        burn_cpu_ms(TASK_MS)


def run_bare(tasks: int) -> None:
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            burn(tasks // WORKERS)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


def serve(read_fd: int, write_fd: int) -> None:
    """A child: read a count of tasks, burn them, answer with one byte per task, all at once."""
    with os.fdopen(read_fd, "rb", buffering=0) as down, os.fdopen(write_fd, "wb", 0) as up:
        while n := down.read(1)[0]:
            burn(n)
            up.write(b"\x01" * n)


def run_fed(tasks: int) -> None:
    children = []
    for _ in range(WORKERS):
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(down_w)
            os.close(up_r)
            serve(down_r, up_w)
            os._exit(0)
        os.close(down_r)
        os.close(up_w)
        children.append((pid, down_w, up_r))
    left = tasks
    queued = {up_r: 0 for _, _, up_r in children}
    done = 0
    while done < tasks:
        for _, down_w, up_r in children:  # keep two hand-overs queued on each child
            while left and queued[up_r] <= BATCH:
                n = min(BATCH, left)
                os.write(down_w, bytes([n]))
                queued[up_r] += n
                left -= n
        ready, _, _ = select.select([up_r for _, _, up_r in children], [], [])
        for fd in ready:
            got = len(os.read(fd, 4096))
            queued[fd] -= got
            done += got
    for pid, down_w, up_r in children:
        os.write(down_w, b"\x00")
        os.close(down_w)
        os.close(up_r)
        os.waitpid(pid, 0)


VARIANTS: dict[str, Callable[[int], None]] = {"bare": run_bare, "fed": run_fed}


def measure(run: Callable[[int], None], tasks: int) -> dict[str, float]:
    busy0, own0, t0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    run(tasks)
    wall = time.perf_counter() - t0
    foreign = (machine_busy_s() - busy0) - (own_cpu_s() - own0)
    ideal = tasks * TASK_MS / 1000 / WORKERS
    return {
        "seconds": round(wall, 3),
        "efficiency": round(ideal / wall, 4),
        "foreign_cpu_s": round(max(0.0, foreign), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median kept)")
    parser.add_argument("--tasks", type=int, default=TASKS, help="tasks per run (W3: 2,000)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.tasks < WORKERS or args.tasks % WORKERS:
        parser.error(f"--tasks must be a positive multiple of {WORKERS}")
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python bench/w3floor.py " + shlex.join(argv or sys.argv[1:]),
    }
    for name in names:
        runs = []
        for i in range(args.repeat):
            runs.append(measure(VARIANTS[name], args.tasks))
            print(f"w3floor {name} run {i + 1}/{args.repeat}: {runs[-1]}", file=sys.stderr)
        best = sorted(runs, key=lambda r: r["efficiency"])[(len(runs) - 1) // 2]  # a median
        record = {"variant": name, "tasks": args.tasks, "task_ms": TASK_MS, **best, **stamp}
        record["runs_efficiency"] = [r["efficiency"] for r in runs]
        line = json.dumps(record)
        print(line)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
