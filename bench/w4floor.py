"""The floor under W4: the blob traffic of 2,000 tasks of 1 MB in and 1 MB out, through the
project's blob stores, with no task state, no scheduling and no encoding; one JSON line.

    python bench/w4floor.py --backend redis
    python bench/w4floor.py --backend postgres --repeat 3 --out bench/results/w4floor.jsonl

Per task, as a grid moves it: the client puts a fresh 1 MB input in the blob store; one of
two worker processes (W4's 2 workers x 1 executor) gets it, reverses it (W4's handler), puts
the 1 MB result and deletes the input; the client gets the result and checks it. At most
128 tasks are in flight, as W4's client keeps. Keys go from the client to the workers and
back over multiprocessing queues, which cost microseconds against the milliseconds of a
megabyte's trip through a store.

What the grid adds on top, and this leaves out: task rows, claims, leases and completions,
pickling the payload and the result, and the executor hop inside a worker. So W4's tasks/s
on a store read against this line says how much of W4 is the store's data plane.

Each line has ``cpu_s`` by part (client, workers, store servers) besides the wall time: on
PostgreSQL a megabyte in a ``bytea`` costs the server milliseconds of CPU (TOAST splits it
into ~2 kB rows), and that, not the wire, is what bounds W4 there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floor import store_cpu_s
from run import delete_store, fresh_store_url

from htcgrid.backends.blobs import GridBlobStore, new_blob_key
from htcgrid.backends.registry import open_backend, open_blob_store
from htcgrid.benchmark.measure import append_line, machine
from htcgrid.core.ids import new_session_id
from htcgrid.worker.malloc import keep_freed_memory

MB = 1 << 20
TASKS = 2000  # W4's count
WORKERS = 2
WINDOW = 128  # W4's client keeps at most this many tasks in flight
RESULT_TIMEOUT_S = 120.0
BACKENDS = ("sqlite", "redis", "redis-aof", "postgres", "redis-files", "postgres-files")


def blobs_at(url: str) -> GridBlobStore:
    store = open_blob_store(url)
    if store is None:
        raise SystemExit(f"no blob store at {url}")
    return store


def work(url: str, session_id: str, todo: Any, done: Any) -> None:
    """A worker process: get each input, reverse it, put the result, delete the input.
    Its malloc keeps freed memory, as the grid's executors' does."""
    keep_freed_memory()
    blobs = blobs_at(url)
    while (job := todo.get()) is not None:
        i, key = job
        out = new_blob_key(session_id, "output")
        blobs.put(out, blobs.get(key)[::-1])
        blobs.discard([key])
        done.put((i, out))


def run_once(url: str, tasks: int) -> dict[str, Any]:
    """One repetition on the fresh store at ``url``: wall and CPU seconds."""
    open_backend(url).close()  # creates the store's tables; the workers open blobs only
    session_id = new_session_id()
    ctx = mp.get_context("fork")
    todo, done = ctx.Queue(), ctx.Queue()
    workers = [ctx.Process(target=work, args=(url, session_id, todo, done)) for _ in range(WORKERS)]
    for p in workers:
        p.start()
    put_blobs, get_blobs = blobs_at(url), blobs_at(url)
    base = os.urandom(MB)
    head = base[-8:][::-1]
    window = threading.Semaphore(WINDOW)
    failures: list[str] = []

    def collect() -> None:
        for _ in range(tasks):
            try:
                i, out = done.get(timeout=RESULT_TIMEOUT_S)
            except queue.Empty:
                failures.append(f"no result within {RESULT_TIMEOUT_S:g} s (a worker died?)")
                return
            value = get_blobs.get(out)
            if not (len(value) == MB and value[:8] == head and value[-8:] == key_tail(i)):
                failures.append(f"task {i}: wrong result")
            window.release()

    warm = new_blob_key(session_id, "input")  # one untimed round: connections, first pages
    put_blobs.put(warm, base)
    put_blobs.get(warm)
    put_blobs.discard([warm])

    collector = threading.Thread(target=collect)
    t0, c0, s0 = time.perf_counter(), time.process_time(), store_cpu_s()
    collector.start()
    for i in range(tasks):
        while not window.acquire(timeout=1.0):
            if not collector.is_alive():
                break
        if not collector.is_alive():
            break
        key = new_blob_key(session_id, "input")
        put_blobs.put(key, i.to_bytes(8, "big") + base[8:])
        todo.put((i, key))
    collector.join()
    seconds = time.perf_counter() - t0
    client_cpu = time.process_time() - c0
    server_cpu = store_cpu_s() - s0
    for _ in workers:
        todo.put(None)
    before = os.times()
    for p in workers:
        p.join()
    after = os.times()
    if failures:
        raise SystemExit(f"{len(failures)} failure(s), the first: {failures[0]}")
    workers_cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    return {
        "seconds": seconds,
        "cpu_s": {"client": client_cpu, "workers": workers_cpu, "store": server_cpu},
    }


def key_tail(i: int) -> bytes:
    """What the result of task ``i`` ends with: its index's bytes, reversed."""
    return i.to_bytes(8, "big")[::-1]


def fresh_url(backend: str) -> tuple[str, Path | None]:
    url = fresh_store_url(backend)
    if url is not None:
        return url, None
    tmp = Path(tempfile.mkdtemp(prefix="htcgrid-w4floor-"))
    return f"sqlite://{tmp / 'grid.db'}", tmp


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median)")
    parser.add_argument("--tasks", type=int, default=TASKS, help="tasks per repetition")
    parser.add_argument("--out", type=Path, help="also append the JSON line to this file")
    args = parser.parse_args(argv)
    if min(args.repeat, args.tasks) < 1:
        parser.error("--repeat and --tasks must be at least 1")
    runs = []
    for rep in range(args.repeat):
        url, tmp = fresh_url(args.backend)
        try:
            result = run_once(url, args.tasks)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                delete_store(args.backend, url)
        runs.append(result)
        cpu = " ".join(f"{k} {v:.2f}" for k, v in result["cpu_s"].items())
        print(
            f"w4floor {args.backend} run {rep + 1}/{args.repeat}: {result['seconds']:.2f} s, "
            f"{args.tasks / result['seconds']:.0f} tasks/s; cpu s: {cpu}",
            file=sys.stderr,
        )
    walls = [r["seconds"] for r in runs]
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    line = {
        "workload": "w4floor",
        "backend": args.backend,
        "n": args.tasks,
        "seconds": round(median["seconds"], 3),
        "tasks_per_s": round(args.tasks / median["seconds"], 1),
        "mb_per_s": round(2 * args.tasks / median["seconds"], 1),
        "cpu_s": {k: round(v, 2) for k, v in median["cpu_s"].items()},
        "cpu_ms_per_task": {k: round(v / args.tasks * 1e3, 2) for k, v in median["cpu_s"].items()},
        "repeat": args.repeat,
        "runs_seconds": [round(w, 3) for w in walls],
        "seconds_stdev": round(statistics.stdev(walls), 3) if len(walls) > 1 else 0.0,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join(["python", "bench/w4floor.py", *sys.argv[1:]]),
    }
    text = json.dumps(line)
    print(text, flush=True)
    append_line(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
