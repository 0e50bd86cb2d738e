"""Where W3's time goes: W3's 2,000 ten-millisecond burns on a fresh grid, each one
stamped with when it started and ended on which executor; one JSON line per run.

    python bench/w3timeline.py
    python bench/w3timeline.py --backend postgres --repeat 3 --out bench/results/w3timeline.jsonl

W3 (docs/benchmarks.md) scores efficiency = (2,000 x 10 ms / 2) / wall. This script runs the
same tasks on the same kind of grid (2 worker processes x 1 executor, warmed up as
``bench/run.py`` does), but each task also returns its executor's pid and the wall-clock
times at which its burn began and ended. It then splits each executor's share of the wall
time (from the first submit to the moment the client holds every result) into:

- ``burn_s``: the CPU time the burns asked for (10 ms each): the work itself;
- ``stretch_s``: how much longer the burns took on the wall clock than on their thread's CPU
  clock: time the executor's core gave to something else (the agents, the client, the
  store, the machine's own services) while a task ran;
- ``gaps_s``: the time between one burn's end and the next one's start on the same
  executor: the executor's own work per task (decode, call, encode, answer) and any wait
  for the next task;
- ``start_s``: from the first submit to the executor's first burn;
- ``tail_s``: from the executor's last burn to the moment the client holds every result:
  the other executor still running, then the last completion reaching the client.

The five add up to the wall time, so each line says what a lost point of efficiency was
made of. The burns are ``htcgrid.workloads.burn_cpu_ms``'s loop; the stamps cost two clock
reads a task.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import BACKENDS, fresh_store

import htcgrid
from htcgrid.benchmark.measure import append_line, machine
from htcgrid.benchmark.runs import warm_up

TASKS = 2000  # W3's count
TASK_MS = 10.0
WORKERS = 2
RESULT_TIMEOUT_S = 300.0
PARTS = ("burn_s", "stretch_s", "gaps_s", "start_s", "tail_s")


def stamped_burn(ms: float) -> tuple[int, float, float]:
    """Burn ``ms`` ms of this thread's CPU as W3's tasks do; return (pid, wall time at the
    start, wall time at the end)."""
    began = time.time()
    deadline = time.thread_time() + ms / 1000.0
    while time.thread_time() < deadline:
        for _ in range(100):  # the same loop as burn_cpu_ms
            pass
    return os.getpid(), began, time.time()


def split(stamps: list[tuple[int, float, float]], t0: float, t1: float) -> dict[str, Any]:
    """Each executor's share of the wall time ``t1 - t0``, cut into PARTS."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, began, ended in stamps:
        by_pid.setdefault(pid, []).append((began, ended))
    executors = []
    for runs in by_pid.values():
        runs.sort()
        gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
        burn_s = len(runs) * TASK_MS / 1000
        executors.append(
            {
                "tasks": len(runs),
                "burn_s": burn_s,
                "stretch_s": sum(e - b for b, e in runs) - burn_s,
                "gaps_s": sum(gaps),
                "start_s": runs[0][0] - t0,
                "tail_s": t1 - runs[-1][1],
                "gap_p50_us": statistics.median(gaps) * 1e6 if gaps else 0.0,
                "task_p99_ms": sorted(e - b for b, e in runs)[int(0.99 * (len(runs) - 1))] * 1e3,
            }
        )
    total = (t1 - t0) * len(executors)
    shares = {p: sum(e[p] for e in executors) / total for p in PARTS}
    return {
        "seconds": round(t1 - t0, 4),
        "efficiency": round(len(stamps) * TASK_MS / 1000 / WORKERS / (t1 - t0), 4),
        "share": {p: round(v, 4) for p, v in shares.items()},
        "executors": [{k: round(v, 4) for k, v in e.items()} for e in executors],
    }


def run_once(backend: str, tasks: int) -> dict[str, Any]:
    """One run on a fresh grid and store."""
    with (
        contextmanager(fresh_store)(backend) as url,
        tempfile.TemporaryDirectory(prefix="htcgrid-w3timeline-") as tmp,
    ):
        embedded = htcgrid.EmbeddedGrid(
            home=Path(tmp), store_url=url, workers=WORKERS, concurrency=1
        ).start()
        try:
            grid = htcgrid.connect(embedded.url, start_workers=False)
            try:
                warm_up(grid, WORKERS)
                with grid.session(name="w3timeline") as session:
                    t0 = time.time()
                    futures = session.submit_many(stamped_burn, [TASK_MS] * tasks)
                    stamps = [f.result(timeout=RESULT_TIMEOUT_S) for f in futures]
                    t1 = time.time()
            finally:
                grid.close()
        finally:
            embedded.stop()
    ran = len({pid for pid, _, _ in stamps})
    if ran != WORKERS:
        print(f"warning: only {ran} executors ran", file=sys.stderr)
    return split(stamps, t0, t1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS, help="the fresh store")
    parser.add_argument("--repeat", type=int, default=1, help="runs (each printed)")
    parser.add_argument("--tasks", type=int, default=TASKS, help="tasks per run (W3: 2,000)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.tasks < WORKERS:
        parser.error(f"--tasks must be at least {WORKERS}")
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python bench/w3timeline.py " + shlex.join(argv or sys.argv[1:]),
    }
    for i in range(args.repeat):
        result = run_once(args.backend, args.tasks)
        shares = ", ".join(f"{p.removesuffix('_s')} {v:.2%}" for p, v in result["share"].items())
        print(
            f"w3timeline {args.backend} run {i + 1}/{args.repeat}: {result['seconds']} s, "
            f"efficiency {result['efficiency']:.2%}; of the executors' time: {shares}",
            file=sys.stderr,
        )
        line = json.dumps({"backend": args.backend, "tasks": args.tasks, **result, **stamp})
        print(line)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
