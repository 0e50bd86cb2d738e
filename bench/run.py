"""Run the benchmark workloads (described in docs/benchmarks.md) and print one JSON line per
workload: this repository's front end to :mod:`htcgrid.benchmark` (``htcgrid bench``), with
fresh stores on the local Redis and PostgreSQL servers for every repetition.

    python bench/run.py                                   # W1-W4, median of 3, fresh grids
    python bench/run.py --workloads W1,W3 --repeat 3 --out bench/results/results.jsonl
    python bench/run.py --workers 1 --concurrency 2       # one agent with two executors
    python bench/run.py --backend redis --workloads W1,W3,W4
    python bench/run.py --backend postgres --workloads W7 --repeat 1
    python bench/run.py --workloads W5,W6 --repeat 1      # a million tasks; churn

Each repetition runs in a fresh Python process on a fresh embedded grid (a reaper and
``--workers`` worker processes with ``--concurrency`` executors each) over a fresh, empty
store, so the client's peak RSS and the grid's state start clean every time. ``--backend``
picks the store: ``sqlite`` (a file in a temporary directory, the default), ``redis`` (a new
key prefix in database 14 of 127.0.0.1:6379), ``redis-aof`` (the same on 127.0.0.1:6380,
the server with an append-only file) or ``postgres`` (a new schema in the ``test`` database
of 127.0.0.1:5432); ``redis-files`` and ``postgres-files`` are the same stores with their
blobs as files in a temporary directory (``?blobs=DIR``). A Redis or PostgreSQL store is
deleted (its keys, its schema, its blob directory) after the repetition, also when it
failed. ``--store URL`` runs against a grid that is already serving that store instead (its
workers are yours to start; only the sessions the run made are deleted afterwards).

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
import shlex
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from htcgrid.benchmark.driver import (
    SCALE_OUT_WORKERS,
    WORKLOADS,
    BenchError,
    Options,
    Target,
    plan,
    run_plan,
)
from htcgrid.benchmark.measure import append_line, machine
from htcgrid.core.errors import InvalidInput

__all__ = ["delete_store", "fresh_store", "fresh_store_url", "machine", "main"]

BASE_WORKLOADS = ("W1", "W2", "W3", "W4")
BACKENDS = ("sqlite", "redis", "redis-aof", "postgres", "redis-files", "postgres-files")
REDIS_SERVERS = {"redis": "redis://127.0.0.1:6379/14", "redis-aof": "redis://127.0.0.1:6380/14"}
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


# -- fresh stores ----------------------------------------------------------------------------
def fresh_store_url(backend: str) -> str | None:
    """A new, empty store's URL for one repetition (None: the child makes a SQLite one).
    A ``-files`` backend keeps its blobs as files in a new temporary directory."""
    tag = uuid.uuid4().hex
    blobs = ""
    if backend.endswith("-files"):
        backend = backend.removesuffix("-files")
        blobs = f"&blobs={Path(tempfile.gettempdir()) / f'htcgrid-bench-blobs-{tag}'}"
    if backend in REDIS_SERVERS:
        return f"{REDIS_SERVERS[backend]}?prefix=bench-{tag}{blobs}"
    if backend == "postgres":
        return f"{POSTGRES_SERVER}?schema=bench_{tag}{blobs}"
    return None


def delete_store(backend: str, url: str) -> None:
    """Delete a store that :func:`fresh_store_url` made: the Redis prefix's keys (those of
    the store, ``{prefix}:...``, and of its sessions, ``{prefix:session}:...``), or the
    PostgreSQL schema."""
    options = dict(part.split("=", 1) for part in url.partition("?")[2].split("&") if part)
    if "blobs" in options and "htcgrid-bench-blobs-" in options["blobs"]:
        shutil.rmtree(options["blobs"], ignore_errors=True)
    backend = backend.removesuffix("-files")
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


def fresh_store(backend: str) -> Iterator[str | None]:
    """One repetition's store: made before, deleted after (also when the run failed)."""
    url = fresh_store_url(backend)
    try:
        yield url
    finally:
        if url:
            delete_store(backend, url)


# -- the command line -------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads",
        default=",".join(BASE_WORKLOADS),
        help=f"some of {','.join(WORKLOADS)} (default {','.join(BASE_WORKLOADS)})",
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
    args = parser.parse_args()
    if args.workers < 1 or args.concurrency < 1 or args.repeat < 1 or args.scale <= 0:
        parser.error("--workers, --concurrency, --repeat must be >= 1 and --scale > 0")
    if args.store and args.backend != "sqlite":
        parser.error("--store (a running grid) and --backend (fresh stores) exclude each other")
    try:
        scale_out = tuple(int(n) for n in args.scale_out_workers.split(",") if n.strip())
    except ValueError:
        parser.error("--scale-out-workers takes counts like 1,2,4,8")
    if not scale_out or min(scale_out) < 1:
        parser.error("--scale-out-workers takes counts of at least 1")

    if args.store:  # a running grid: its workers, its store, fresh sessions
        target = Target(mode="store", url=args.store)
    else:
        make = contextmanager(fresh_store)
        target = Target(
            backend=args.backend,
            fresh_store=None if args.backend == "sqlite" else lambda: make(args.backend),
        )
    options = Options(
        workers=0 if args.store else args.workers,
        concurrency=args.concurrency,
        codec=args.codec,
        scale=args.scale,
        repeat=args.repeat,
        tmpdir=args.tmpdir,
        scale_out_workers=scale_out,
    )
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    try:
        plan(workloads, target, options)
    except InvalidInput as exc:
        parser.error(str(exc))
    status = 0
    command = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    for outcome in run_plan(
        workloads,
        target,
        options,
        command=command,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    ):
        if isinstance(outcome, BenchError):
            print(f"error: {outcome}", file=sys.stderr)
            status = 1
            continue
        line = json.dumps(outcome)
        print(line, flush=True)
        append_line(args.out, line)
    return status


if __name__ == "__main__":
    sys.exit(main())
