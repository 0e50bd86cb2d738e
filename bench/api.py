"""The HTTP API's cost: W1 and W2 (see docs/benchmarks.md) through the API and directly, on
the same embedded SQLite grid, printed as one JSON line per (workload, mode) and a summary line.

    python bench/api.py                      # W1 and W2, direct and api, median of 3
    python bench/api.py --repeat 1 --workloads W2

One embedded grid (2 worker processes) serves both modes; the API runs as its own process
(``htcgrid api``), as it would in production, so client, API and workers each have their
own interpreter. Each repetition uses a fresh session; before timing, a warm-up runs tasks
until every worker process has run one. W1's clock runs from the first submit to the moment
the client holds and has checked every result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import htcgrid
from htcgrid.api.auth import create_token
from htcgrid.workloads import noop


def w1(grid: htcgrid.Grid, n: int) -> dict[str, Any]:
    """n no-op tasks of ~100-byte inputs, submitted in batches, every result checked."""
    inputs = [f"task {i:08d} ".encode().ljust(100, b".") for i in range(n)]
    with grid.session(name="bench-api-W1") as session:
        start = time.perf_counter()
        futures = session.submit_many(noop, inputs)
        for i, future in enumerate(futures):
            if future.result(timeout=600) != inputs[i]:
                raise AssertionError(f"W1 task {i}: wrong result")
        seconds = time.perf_counter() - start
    return {"n": n, "seconds": seconds, "tasks_per_s": n / seconds}


def w2(grid: htcgrid.Grid, n: int, warm: int = 20) -> dict[str, Any]:
    """n sequential single-task round trips after ``warm`` warm-up ones."""
    payload = b"x" * 100
    latencies = []
    with grid.session(name="bench-api-W2") as session:
        for _ in range(warm):
            session.submit(noop, payload).result(timeout=60)
        for _ in range(n):
            t0 = time.perf_counter()
            if session.submit(noop, payload).result(timeout=60) != payload:
                raise AssertionError("W2: wrong result")
            latencies.append(time.perf_counter() - t0)
    return {"n": n, "p50_ms": rank(latencies, 50), "p99_ms": rank(latencies, 99)}


def rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] * 1000


def warm_up(grid: htcgrid.Grid, workers: int) -> None:
    """Run instant tasks until every worker process has run one."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    with grid.session(name="bench-api-warm-up") as session:
        while len(seen) < workers and time.monotonic() < deadline:
            seen.update(f.result(timeout=60) for f in session.submit_many(_pid, range(8)))


def _pid(_: object) -> int:
    """Which worker process ran the task (shipped to workers with cloudpickle)."""
    return os.getpid()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_api(store: str, tokens: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "htcgrid.cli", "api", "--store", store, "--port", str(port)]
    cmd += ["--tokens", str(tokens), "--no-access-log"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the API did not start")


def run(home: Path, args: argparse.Namespace, workloads: list[str]) -> dict[str, Any]:
    """W1/W2 direct and through an API process, on a fresh embedded grid in ``home``."""
    tokens = home / "tokens.toml"
    token = create_token(tokens, "bench")
    port = free_port()
    summary: dict[str, Any] = {}
    with htcgrid.EmbeddedGrid(home, workers=args.workers, log_dir=home / "logs") as eg:
        api = start_api(eg.url, tokens, port)
        try:
            grids = {
                "direct": htcgrid.connect(eg.url, start_workers=False),
                "api": htcgrid.connect(f"http://127.0.0.1:{port}", token=token),
            }
            warm_up(grids["direct"], args.workers)
            for workload in workloads:
                for mode, grid in grids.items():
                    runs = [
                        w1(grid, args.tasks) if workload == "W1" else w2(grid, args.round_trips)
                        for _ in range(args.repeat)
                    ]
                    key = "seconds" if workload == "W1" else "p50_ms"
                    median = sorted(runs, key=lambda r: r[key])[len(runs) // 2]
                    line = {"workload": workload, "mode": mode, "workers": args.workers, **median}
                    line["runs"] = [round(r[key], 4) for r in runs]
                    print(json.dumps(line), flush=True)
                    summary[f"{workload}_{mode}"] = median
            for grid in grids.values():
                grid.close()
        finally:
            api.terminate()
            api.wait(timeout=30)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20_000, help="W1 tasks")
    parser.add_argument("--round-trips", type=int, default=300, help="W2 round trips")
    args = parser.parse_args()
    workloads = [w.strip().upper() for w in args.workloads.split(",")]
    with tempfile.TemporaryDirectory(prefix="htcgrid-bench-api-") as tmp:
        summary = run(Path(tmp), args, workloads)
    if "W1_direct" in summary and "W1_api" in summary:
        ratio = summary["W1_api"]["tasks_per_s"] / summary["W1_direct"]["tasks_per_s"]
        print(json.dumps({"W1_api_over_direct": round(ratio, 3)}))
    if "W2_direct" in summary and "W2_api" in summary:
        extra = summary["W2_api"]["p50_ms"] - summary["W2_direct"]["p50_ms"]
        print(json.dumps({"W2_p50_added_ms": round(extra, 3)}))


if __name__ == "__main__":
    main()
