"""W1-W4 on other ways to run Python tasks, on this machine, as `bench/run.py` runs them on
the grid: one JSON line per workload, in the same shape.

    python bench/peers.py --peer pool                       # the standard library, no install
    /tmp/peers/bin/python bench/peers.py --peer ray         # in a venv that has Ray
    /tmp/peers/bin/python bench/peers.py --peer dask --repeat 3 --out bench/results/peers.jsonl
    /tmp/peers/bin/python bench/peers.py --peer celery          # Redis on 127.0.0.1:6379

The peers, each with 2 worker processes (one per core on the reference machine):
- ``pool``: :class:`concurrent.futures.ProcessPoolExecutor` with 2 processes. No store, no
  leases, no retries: what Python alone does, a floor for any grid that keeps state.
- ``ray``: ``ray.init(num_cpus=2)``, the functions as ``ray.remote`` tasks.
- ``dask``: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)``.
- ``celery``: a Celery worker with ``--pool prefork --concurrency 2``, Redis (database 13
  on 127.0.0.1:6379, flushed before and after) as its broker and result store, the tasks
  in ``bench/peers_celery.py``. Its results take no completion callback, so a task's
  latency runs until the client collects it, in input order.

Ray, Dask and Celery are not dependencies of this project; install them in a venv of their
own (docs/benchmarks.md, "Against Ray, Dask, Celery and a process pool", has the commands)
and run this script with its Python and ``PYTHONPATH=src``.

The workloads are those of `htcgrid.benchmark.runs`, with the same functions
(`htcgrid.workloads`), inputs, checks and windows, driven by the same function
(`runs.drive`): every result is returned to the client and checked, W4 keeps at most 128
tasks in flight, submitted 16 at a time.
Before each timed run, instant tasks run until both worker processes have run one. Each
repetition starts the peer afresh; the median repetition is printed, as `bench/run.py` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from htcgrid.benchmark.measure import append_line, machine
from htcgrid.benchmark.runs import FutureLike, drive, percentiles, w1_input
from htcgrid.workloads import MB, burn_cpu_ms, echo_bytes, noop

HERE = Path(__file__).resolve().parent
WORKERS = 2
WORKLOADS = ("W1", "W2", "W3", "W4")


#: Submit ``fn`` over a list of inputs; one future per input, in order.
Submit = Callable[[Callable[..., Any], list[Any]], list[FutureLike]]


def worker_pid(_: object) -> int:
    """Warm-up task: which worker process ran it."""
    return os.getpid()


@contextmanager
def pool_peer() -> Iterator[tuple[str, Submit]]:
    with ProcessPoolExecutor(WORKERS) as pool:

        def submit(fn: Callable[..., Any], values: list[Any]) -> list[FutureLike]:
            return [pool.submit(fn, v) for v in values]

        yield f"pool (Python {sys.version.split()[0]})", submit


@contextmanager
def ray_peer() -> Iterator[tuple[str, Submit]]:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    remotes: dict[Callable[..., Any], Any] = {}
    try:

        def submit(fn: Callable[..., Any], values: list[Any]) -> list[FutureLike]:
            remote = remotes.setdefault(fn, ray.remote(fn))
            futures: list[FutureLike] = [remote.remote(v).future() for v in values]
            return futures

        yield f"ray {ray.__version__}", submit
    finally:
        ray.shutdown()


@contextmanager
def dask_peer() -> Iterator[tuple[str, Submit]]:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:

        def submit(fn: Callable[..., Any], values: list[Any]) -> list[FutureLike]:
            futures: list[FutureLike] = client.map(fn, values, pure=False)
            return futures

        yield f"dask {distributed.__version__}", submit
    finally:
        client.close()
        cluster.close()


#: Celery's broker and result store: a Redis database flushed before and after each run.
CELERY_URL = "redis://127.0.0.1:6379/13"


class CeleryFuture:
    """A Celery result as the driver uses a future. Celery results take no completion
    callback, so the callbacks run when the client collects the result, in input order: a
    task's latency is the time until the client holds its result."""

    def __init__(self, result: Any) -> None:
        self._result = result
        self._callbacks: list[Callable[[Any], object]] = []

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None:
        self._callbacks.append(fn)

    def result(self, timeout: float | None = None) -> Any:
        value = self._result.get(timeout=timeout)
        for fn in self._callbacks:
            fn(self)
        return value


@contextmanager
def celery_peer() -> Iterator[tuple[str, Submit]]:
    import celery
    import redis

    store = redis.Redis.from_url(CELERY_URL)
    try:
        store.flushdb()
    except redis.ConnectionError as exc:
        raise SystemExit(
            f"peers.py: Celery's broker, Redis at {CELERY_URL}, is down: {exc}"
        ) from None
    # Celery refuses to run pickle as root unless told to: the benchmark's broker is a local
    # Redis that only this script writes to
    env = dict(os.environ, HTCGRID_PEERS_CELERY=CELERY_URL, C_FORCE_ROOT="1")
    paths = [str(HERE), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in paths if p)  # cwd moves
    os.environ["HTCGRID_PEERS_CELERY"] = CELERY_URL
    command = ["-m", "celery", "-A", "peers_celery", "worker", "--pool", "prefork"]
    command += ["--concurrency", str(WORKERS), "--loglevel", "WARNING"]
    # its banner and logs go to stderr: stdout carries the JSON lines
    worker = subprocess.Popen([sys.executable, *command], env=env, cwd=HERE, stdout=sys.stderr)
    try:
        from peers_celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"peers.py: the Celery worker did not start ({worker.poll()=})")

        def submit(fn: Callable[..., Any], values: list[Any]) -> list[FutureLike]:
            name = fn.__name__
            return [CeleryFuture(app.send_task(name, (v,))) for v in values]

        yield f"celery {celery.__version__}", submit
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        store.flushdb()
        store.close()


PEERS: dict[str, Callable[[], AbstractContextManager[tuple[str, Submit]]]] = {
    "pool": pool_peer,
    "ray": ray_peer,
    "dask": dask_peer,
    "celery": celery_peer,
}
#: The package each peer needs, to say what to install when it is missing.
PACKAGES = {"ray": "ray", "dask": "distributed", "celery": "celery"}


def warm_up(submit: Submit, timeout_s: float = 120.0) -> None:
    """Run instant tasks until every worker process has run one."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {WORKERS} workers ran a warm-up task")
        seen.update(f.result(timeout=timeout_s) for f in submit(worker_pid, list(range(8))))


def w1(submit: Submit) -> dict[str, Any]:
    inputs = [w1_input(i) for i in range(20_000)]

    def check(i: int, value: Any) -> None:
        if value != inputs[i]:
            raise AssertionError(f"W1 task {i}: got {value!r}")

    seconds, lat = drive(partial(submit, noop), inputs, check)
    return {"n": len(inputs), "seconds": seconds, **percentiles(lat)}


def w2(submit: Submit) -> dict[str, Any]:
    payload = b"x" * 100
    for _ in range(20):
        submit(noop, [payload])[0].result(timeout=60)
    lat: list[float] = []
    start = time.perf_counter()
    for _ in range(300):
        t0 = time.perf_counter()
        value = submit(noop, [payload])[0].result(timeout=60)
        lat.append(time.perf_counter() - t0)
        if value != payload:
            raise AssertionError(f"W2: got {value!r}")
    return {"n": 300, "seconds": time.perf_counter() - start, **percentiles(lat)}


def w3(submit: Submit) -> dict[str, Any]:
    def check(i: int, value: Any) -> None:
        if value != 10.0:
            raise AssertionError(f"W3 task {i}: got {value!r}")

    seconds, lat = drive(partial(submit, burn_cpu_ms), [10.0] * 2000, check)
    efficiency = (2000 * 0.010 / WORKERS) / seconds
    return {"n": 2000, "seconds": seconds, "efficiency": efficiency, **percentiles(lat)}


def w4(submit: Submit) -> dict[str, Any]:
    base = os.urandom(MB)
    head = base[-8:][::-1]

    def inputs() -> Iterator[bytes]:
        for i in range(2000):
            yield i.to_bytes(8, "big") + base[8:]

    def check(i: int, value: Any) -> None:
        ok = isinstance(value, bytes) and len(value) == MB
        if not (ok and value[:8] == head and value[-8:] == i.to_bytes(8, "big")[::-1]):
            raise AssertionError(f"W4 task {i}: wrong result")

    seconds, lat = drive(partial(submit, echo_bytes), inputs(), check, batch=16, window=128)
    return {"n": 2000, "seconds": seconds, "mb_per_s": 2 * 2000 / seconds, **percentiles(lat)}


RUNS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}


def measure(peer: str, workload: str) -> tuple[str, dict[str, Any]]:
    """One repetition: start the peer, warm it up, run the workload, stop the peer."""
    with PEERS[peer]() as (name, submit):
        warm_up(submit)
        result = RUNS[workload](submit)
    result["tasks_per_s"] = result["n"] / result["seconds"]
    return name, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", required=True, choices=sorted(PEERS), help="what to measure")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median kept)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in RUNS]
    if unknown or not workloads:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    package = PACKAGES.get(args.peer)
    if package is not None:
        try:
            __import__(package)
        except ImportError:
            parser.error(
                f"{args.peer} is not installed in this Python ({sys.executable}): install "
                f"{package!r} in a venv of its own and run this script with that venv's Python"
            )
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python bench/peers.py " + shlex.join(argv or sys.argv[1:]),
    }
    for workload in workloads:
        runs: list[dict[str, Any]] = []
        name = args.peer
        for i in range(args.repeat):
            name, result = measure(args.peer, workload)
            runs.append(result)
            print(
                f"{workload} {name} run {i + 1}/{args.repeat}: {result['seconds']:.3f} s",
                file=sys.stderr,
            )
        middle = statistics.median_low([r["seconds"] for r in runs])
        best = next(r for r in runs if r["seconds"] == middle)
        record = {"workload": workload, "backend": name, "workers": WORKERS, **best}
        record["runs_seconds"] = [r["seconds"] for r in runs]
        record.update(stamp)
        line = json.dumps(record)
        print(line)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
