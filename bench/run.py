"""Run the benchmark workloads W1-W4 and W7 (described in docs/benchmarks.md) and print one
JSON line per workload.

    python bench/run.py                                   # W1-W4, median of 3, fresh grids
    python bench/run.py --workloads W1,W3 --repeat 3 --out bench/results/results.jsonl
    python bench/run.py --workers 1 --concurrency 2       # one agent with two executors
    python bench/run.py --backend redis --workloads W1,W3,W4
    python bench/run.py --backend postgres --workloads W7 --repeat 1

Each repetition runs in a fresh Python process on a fresh embedded grid (a reaper and
``--workers`` worker processes with ``--concurrency`` executors each) over a fresh, empty
store, so the client's peak RSS and the grid's state start clean every time. ``--backend``
picks the store: ``sqlite`` (a file in a temporary directory, the default), ``redis`` (a new
key prefix in database 14 of 127.0.0.1:6379), ``redis-aof`` (the same on 127.0.0.1:6380,
the server with an append-only file) or ``postgres`` (a new schema in the ``test`` database
of 127.0.0.1:5432). A Redis or PostgreSQL store is deleted (its keys, its schema) after the
repetition, also when it failed. ``--store URL`` runs against a grid that is already serving
that store instead (its workers are yours to start; nothing is cleaned up).

W7 is scale-out: W1 and W3 with 1, 2, 4 and 8 worker processes (``--scale-out-workers``),
one line per (workload, worker count), labelled ``W7:W1`` and ``W7:W3``.

The clock runs from the first submit call to the moment the client holds (and has checked)
every result. Before it starts, a warm-up session waits until every executor process has
run a task, so interpreter start-up is not timed. The reported line is the repetition with
the median wall time; ``runs_seconds`` lists all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import htcgrid
from htcgrid.workloads import MB, burn_cpu_ms, echo_bytes, noop

BASE_WORKLOADS = ("W1", "W2", "W3", "W4")
WORKLOADS = (*BASE_WORKLOADS, "W7")
#: W7 (scale-out) runs these workloads with each of these worker-process counts
SCALE_OUT_WORKLOADS = ("W1", "W3")
SCALE_OUT_WORKERS = (1, 2, 4, 8)
BACKENDS = ("sqlite", "redis", "redis-aof", "postgres")
REDIS_SERVERS = {"redis": "redis://127.0.0.1:6379/14", "redis-aof": "redis://127.0.0.1:6380/14"}
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
#: Longest a single repetition may take before it is abandoned.
RUN_TIMEOUT_S = 1800.0


# -- the workloads ------------------------------------------------------------------------
class Run:
    """One repetition of one workload against an open grid."""

    def __init__(self, grid: htcgrid.Grid, codec: str, scale: float, timeout_s: float) -> None:
        self.grid = grid
        self.codec = codec
        self.scale = scale
        self.timeout_s = timeout_s

    def n(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def w1_noop(self) -> dict[str, Any]:
        """20,000 tasks returning their ~100-byte input."""
        inputs = [f"task {i:08d} ".encode().ljust(100, b".") for i in range(self.n(20_000))]

        def check(i: int, value: Any) -> None:
            if value != inputs[i]:
                raise AssertionError(f"W1 task {i}: got {value!r}")

        seconds, lat = self.drive(noop, inputs, check)
        return {"n": len(inputs), "seconds": seconds, **percentiles(lat)}

    def w2_latency(self) -> dict[str, Any]:
        """300 sequential single tasks (submit one, wait for it), after 20 warm-up ones."""
        payload = b"x" * 100
        with self.grid.session(codec=self.codec, name="bench-W2") as session:
            for _ in range(20):
                session.submit(noop, payload).result(timeout=self.timeout_s)
            lat: list[float] = []
            n = self.n(300)
            start = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                value = session.submit(noop, payload).result(timeout=self.timeout_s)
                lat.append(time.perf_counter() - t0)
                if value != payload:
                    raise AssertionError(f"W2: got {value!r}")
            seconds = time.perf_counter() - start
        return {"n": n, "seconds": seconds, **percentiles(lat)}

    def w3_cpu(self) -> dict[str, Any]:
        """2,000 tasks that each busy-loop 10 ms of CPU."""
        n = self.n(2000)

        def check(i: int, value: Any) -> None:
            if value != 10.0:
                raise AssertionError(f"W3 task {i}: got {value!r}")

        seconds, lat = self.drive(burn_cpu_ms, (10.0 for _ in range(n)), check)
        return {"n": n, "seconds": seconds, **percentiles(lat)}

    def w4_payload(self) -> dict[str, Any]:
        """2,000 tasks each taking 1 MB of bytes and returning 1 MB (reversed)."""
        n = self.n(2000)
        base = os.urandom(MB)
        head = base[-8:][::-1]  # what every reversed result starts with

        def inputs() -> Iterator[bytes]:
            for i in range(n):  # fresh bytes per task, made lazily: 2 GB never sit in memory
                yield i.to_bytes(8, "big") + base[8:]

        def check(i: int, value: Any) -> None:
            ok = isinstance(value, bytes) and len(value) == MB
            if not (ok and value[:8] == head and value[-8:] == i.to_bytes(8, "big")[::-1]):
                raise AssertionError(f"W4 task {i}: wrong {len(value)}-byte result")

        # a bounded window of 1 MB tasks in flight: submitting all 2,000 first would write
        # 2 GB of input blobs before the first task could start
        seconds, lat = self.drive(echo_bytes, inputs(), check, batch=16, window=128)
        return {"n": n, "seconds": seconds, "mb_per_s": 2 * n / seconds, **percentiles(lat)}

    def drive(
        self,
        fn: Callable[..., Any],
        inputs: Iterable[Any],
        check: Callable[[int, Any], None],
        *,
        batch: int = 2000,
        window: int | None = None,
    ) -> tuple[float, list[float]]:
        """Submit ``fn`` over ``inputs`` in batches, keeping at most ``window`` tasks in flight
        (all of them when None), check every result in input order; return the wall seconds
        from the first submit to the last result, and each task's submit-to-result latency."""
        limit = window or sys.maxsize
        latencies: list[float] = []
        in_flight: deque[tuple[int, htcgrid.TaskFuture]] = deque()
        it = iter(inputs)
        index = 0
        deadline = time.monotonic() + self.timeout_s
        with self.grid.session(codec=self.codec, name="bench") as session:
            start = time.perf_counter()
            while True:
                while len(in_flight) < limit:
                    values = list(islice(it, min(batch, limit - len(in_flight))))
                    if not values:
                        break
                    t0 = time.perf_counter()
                    for future in session.submit_many(fn, values):
                        future.add_done_callback(partial(record_latency, latencies, t0))
                        in_flight.append((index, future))
                        index += 1
                if not in_flight:
                    break
                i, future = in_flight.popleft()
                left = deadline - time.monotonic()
                try:
                    value = future.result(timeout=max(0.0, left))
                except TimeoutError:
                    counts = session.counts()
                    raise TimeoutError(f"unfinished after {self.timeout_s} s: {counts}") from None
                check(i, value)
            seconds = time.perf_counter() - start
        return seconds, latencies


def record_latency(latencies: list[float], t0: float, _future: object) -> None:
    latencies.append(time.perf_counter() - t0)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds (nearest rank)."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))] * 1000

    return {"p50_ms": rank(50), "p99_ms": rank(99)}


# -- warm-up and memory ---------------------------------------------------------------------
def executor_pid(_: object) -> int:
    """Warm-up task: which executor process ran it."""
    return os.getpid()


def warm_up(grid: htcgrid.Grid, executors: int, timeout_s: float = 60.0) -> int:
    """Run small rounds of instant tasks until every executor process has run one (or warn
    after ``timeout_s``); return the rounds it took.

    The warm-up tasks are instant: workers size their prefetch by the slowest handler they
    hold or claimed in the last second, so slow warm-up tasks could throttle the timed run's
    first second.
    """
    seen: set[int] = set()
    rounds = 0
    deadline = time.monotonic() + timeout_s
    with grid.session(name="bench-warm-up") as session:
        while len(seen) < executors and time.monotonic() < deadline:
            futures = session.submit_many(executor_pid, range(2 * executors))
            seen.update(f.result(timeout=timeout_s) for f in futures)
            rounds += 1
            time.sleep(0.05)
    if len(seen) < executors:
        print(f"warning: only {len(seen)} of {executors} executors ran warm-up", file=sys.stderr)
    return rounds


def descendants(roots: list[int]) -> dict[int, int]:
    """Every live process under ``roots`` (roots included), mapped to its depth below them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    depth = {pid: 0 for pid in roots}
    queue = deque(roots)
    while queue:
        pid = queue.popleft()
        for child in children.get(pid, []):
            if child not in depth:
                depth[child] = depth[pid] + 1
                queue.append(child)
    return depth


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MB, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def memory_report(worker_pids: list[int]) -> dict[str, Any]:
    """Peak RSS of the client (which also runs the embedded grid's reaper), of each worker
    (agent) process and of each process below them (executors)."""
    client = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report: dict[str, Any] = {"client": round(client, 1), "workers": [], "executors": []}
    for pid, depth in sorted(descendants(worker_pids).items()):
        mb = peak_rss_mb(pid)
        if mb is None:
            continue
        role = "workers" if depth == 0 else "executors"
        if depth > 0 and "resource_tracker" in command_line(pid):
            role = "helpers"  # multiprocessing's bookkeeping process, not user code
        report.setdefault(role, []).append(round(mb, 1))
    return report


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- one repetition, in a child process -------------------------------------------------------
def run_child(args: argparse.Namespace) -> dict[str, Any]:
    executors = args.workers * args.concurrency
    load_1m = os.getloadavg()[0]  # a busy machine explains an outlier
    with tempfile.TemporaryDirectory(prefix="htcgrid-bench-", dir=args.tmpdir) as tmp:
        if args.store:
            grid = htcgrid.connect(args.store, start_workers=False)
            embedded = None
        else:
            embedded = htcgrid.EmbeddedGrid(
                home=Path(tmp),
                store_url=args.child_url,  # None: a SQLite store in ``tmp``
                workers=args.workers,
                concurrency=args.concurrency,
                log_dir=Path(tmp) / "logs",
            ).start()
            grid = htcgrid.connect(embedded.url, start_workers=False)
        try:
            rounds = warm_up(grid, executors)
            run = Run(grid, args.codec, args.scale, RUN_TIMEOUT_S)
            method = {"W1": run.w1_noop, "W2": run.w2_latency, "W3": run.w3_cpu}.get(
                args.child, run.w4_payload
            )
            roots = embedded.pids if embedded else []
            cpu_before = cpu_seconds(roots)
            record: dict[str, Any] = method()
            cpu_after = cpu_seconds(roots)
            memory = memory_report(roots)
        finally:
            grid.close()
            if embedded is not None:
                embedded.stop()
    record["tasks_per_s"] = record["n"] / record["seconds"]
    if args.child == "W3":
        record["efficiency"] = (record["n"] * 0.010 / executors) / record["seconds"]
    record["peak_rss_mb"] = memory
    record["warm_up_rounds"] = rounds
    record["load_avg_1m_before"] = round(load_1m, 2)
    record["cores"] = os.cpu_count()
    cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before}
    own = cpu["client"] + cpu["grid"] + cpu["store"]
    cpu["foreign"] = round(max(0.0, cpu["machine"] - own), 2)
    record["cpu_s"] = cpu
    return record


#: process names of the store servers, whose CPU time a run on Redis or PostgreSQL includes
STORE_PROCESSES = frozenset({"redis-server", "postgres"})


def cpu_seconds(roots: list[int]) -> dict[str, float]:
    """CPU seconds used so far by the client, by the grid processes under ``roots``, by the
    store servers on this machine (every redis-server and postgres process: only the
    benchmark should be using them) and by the whole machine; a run where the machine used
    much more than the first three shared the CPUs with something else (``foreign`` in the
    record)."""
    tick = os.sysconf("SC_CLK_TCK")
    grid = sum(process_cpu_s(pid, tick) for pid in descendants(roots))
    by_name = dict.fromkeys(sorted(STORE_PROCESSES), 0.0)
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in by_name:
            by_name[name] += process_cpu_s(int(comm.parent.name), tick)
    store = sum(by_name.values())
    times = os.times()
    client = times.user + times.system + times.children_user + times.children_system
    # /proc/stat cpu: user nice system idle iowait irq softirq steal ...
    ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    machine = (sum(ticks) - ticks[3] - ticks[4]) / tick
    return {
        "client": client,
        "grid": grid,
        "store": store,
        **{f"store_{name}": cpu for name, cpu in by_name.items()},
        "machine": machine,
    }


def process_cpu_s(pid: int, tick: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / tick


# -- fresh stores ----------------------------------------------------------------------------
def fresh_store_url(backend: str) -> str | None:
    """A new, empty store's URL for one repetition (None: the child makes a SQLite one)."""
    tag = uuid.uuid4().hex
    if backend in REDIS_SERVERS:
        return f"{REDIS_SERVERS[backend]}?prefix=bench-{tag}"
    if backend == "postgres":
        return f"{POSTGRES_SERVER}?schema=bench_{tag}"
    return None


def delete_store(backend: str, url: str) -> None:
    """Delete a store that :func:`fresh_store_url` made: the Redis prefix's keys (those of
    the store, ``{prefix}:...``, and of its sessions, ``{prefix:session}:...``), or the
    PostgreSQL schema."""
    options = dict(part.split("=", 1) for part in url.partition("?")[2].split("&") if part)
    if backend in REDIS_SERVERS:
        import redis

        prefix = options["prefix"]
        with redis.Redis.from_url(REDIS_SERVERS[backend]) as client:
            for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*"):
                batch: list[bytes] = []
                for key in client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        client.unlink(*batch)
                        batch.clear()
                if batch:
                    client.unlink(*batch)
    elif backend == "postgres":
        import psycopg

        schema = options["schema"]
        if not schema.startswith("bench_") or not schema.replace("_", "").isalnum():
            raise ValueError(f"not a benchmark schema: {schema!r}")
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the driver -----------------------------------------------------------------------------
def machine() -> str:
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.release()} {cpu}, {os.cpu_count()} CPUs, "
        f"{mem_gib:.0f} GiB RAM, Python {platform.python_version()}"
    )


def run_repeated(args: argparse.Namespace, workload: str, label: str = "") -> dict[str, Any]:
    """Run ``workload`` ``--repeat`` times in fresh processes, each on a fresh store (deleted
    afterwards); the median-wall-time run, recorded as ``label`` (default ``workload``)."""
    label = label or workload
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        url = None if args.store else fresh_store_url(args.backend)
        cmd = [sys.executable, __file__, "--child", workload, *child_flags(args)]
        cmd += ["--child-url", url] if url else []
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT_S + 120, check=False
            )
        finally:
            if url:
                delete_store(args.backend, url)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{label} run {rep + 1} failed (exit {proc.returncode})")
        runs.append(json.loads(lines[-1]))
        print(
            f"{label} {args.backend} {args.workers}x{args.concurrency} run {rep + 1}/{args.repeat}:"
            f" {runs[-1]['seconds']:.3f} s",
            file=sys.stderr,
        )
    walls = [r["seconds"] for r in runs]
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    backend = args.store.partition("://")[0] if args.store else args.backend
    return {
        "workload": label,
        "backend": backend,
        **median,
        "workers": args.workers * args.concurrency,
        "layout": f"{args.workers} worker x {args.concurrency} executor",
        "codec": args.codec,
        "grid_dir": args.tmpdir or tempfile.gettempdir(),
        "repeat": args.repeat,
        "runs_seconds": walls,
        "seconds_stdev": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine(),
    }


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--workers", str(args.workers), "--concurrency", str(args.concurrency)]
    flags += ["--codec", args.codec, "--scale", str(args.scale)]
    flags += ["--tmpdir", args.tmpdir] if args.tmpdir else []
    return flags + (["--store", args.store] if args.store else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads",
        default=",".join(BASE_WORKLOADS),
        help="some of W1,W2,W3,W4,W7 (default W1,W2,W3,W4)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--workers", type=int, default=2, help="worker (agent) processes")
    parser.add_argument("--concurrency", type=int, default=1, help="executors per worker")
    parser.add_argument(
        "--backend", default="sqlite", choices=BACKENDS, help="the fresh store (default sqlite)"
    )
    parser.add_argument("--store", help="an already running grid's store URL (not fresh)")
    parser.add_argument(
        "--scale-out-workers",
        default=",".join(map(str, SCALE_OUT_WORKERS)),
        help="W7's worker-process counts (default 1,2,4,8)",
    )
    parser.add_argument("--codec", default="pickle", choices=["pickle", "msgpack"])
    parser.add_argument("--tmpdir", help="where fresh grids live (default: the system's temp)")
    parser.add_argument("--scale", type=float, default=1.0, help="scale task counts (smoke)")
    parser.add_argument("--child", choices=BASE_WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers < 1 or args.concurrency < 1 or args.repeat < 1 or args.scale <= 0:
        parser.error("--workers, --concurrency, --repeat must be >= 1 and --scale > 0")
    if args.store and args.backend != "sqlite":
        parser.error("--store (a running grid) and --backend (fresh stores) exclude each other")
    try:
        scale_out = [int(n) for n in args.scale_out_workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--scale-out-workers takes counts like 1,2,4,8")
    if not scale_out or min(scale_out) < 1:
        parser.error("--scale-out-workers takes counts of at least 1")

    if args.child:
        print(json.dumps(run_child(args)))
        return 0

    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    plan: list[tuple[str, str, int]] = []  # (workload, label, worker processes)
    for workload in workloads:
        if workload == "W7":
            plan += [(w, f"W7:{w}", n) for n in scale_out for w in SCALE_OUT_WORKLOADS]
        else:
            plan.append((workload, workload, args.workers))
    status = 0
    for workload, label, workers in plan:
        try:
            line = json.dumps(
                run_repeated(
                    argparse.Namespace(**{**vars(args), "workers": workers}), workload, label
                )
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(line, flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
