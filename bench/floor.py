"""The floor under W1: the store operations 20,000 no-op tasks need, run back to back in one
process, with no workers, executors or threads; one JSON line per variant.

    python bench/floor.py --backend sqlite --repeat 3
    python bench/floor.py --backend redis --repeat 3 --out bench/results/floor-redis.jsonl
    python bench/floor.py --backend postgres --raw      # also the plainest driver calls

W1 (docs/benchmarks.md) moves every task through submit, claim, complete and the client's
read of finished tasks, with processes, pipes, waits and the GIL in between. This script does
only the store part, through the project's own backend objects (``open_backend(url)``), so
W1's throughput can be read as a fraction of what the store work alone allows, and each
stage's cost per task is known:

- **submit**: 20,000 pre-encoded ``NewTask`` objects (built once, untimed, by
  ``htcgrid.client.payloads.new_task`` as the client does: ``noop`` on 100-byte inputs,
  pickle codec) in batches of 2,000, the client's ``SUBMIT_BATCH``;
- **claim**: ``backend.claim`` in the batch size a worker uses under W1 load (``agent``
  variant: a worker holding only no-ops queues ``max_batch`` = 256 per executor and claims
  again once half of that is free, so 128-256 per claim) or in one big batch (``big``);
- **complete**: ``backend.complete`` of success ``Completion``s (``decide_success``, as the
  agent builds them) carrying the pre-encoded result, which for ``noop`` is the payload
  itself;
- **read**: ``backend.finished(session, cursor, 2000)`` pages, as the client's collector.

Claims and completions alternate (claim a batch, complete it) as in a worker; every submit
comes first and every read last, which is the cheapest order for the store. Times are summed
per stage over their calls; ``seconds`` is the sum of the four. The client's own encode
(``new_task``) and decode (``outcome``) per task are timed outside that sum
(``client_us``). Before the clock, a warm-up session of a few batches goes through the same
calls on the same store, so first-call costs (SQLite statement caches, Redis script loads,
PostgreSQL connections) are not timed.

``--raw`` adds a ``raw`` variant: the same four stages with the plainest calls of each
driver (sqlite3 ``executemany`` in one transaction per batch; a Redis pipeline of hashes and
list operations; psycopg ``executemany`` and set-based ``UPDATE``s), on a minimal schema of
our own. It has no fencing, no fair share, no counters and no wake-ups, so the difference
to the other variants is what the backends' own logic costs.

Every repetition uses a fresh store, deleted afterwards: a SQLite file in a temporary
directory, a new key prefix in database 14 of the Redis server on 127.0.0.1:6379 (``redis``)
or 6380 (``redis-aof``, append-only file), or a new schema in the ``test`` database of the
PostgreSQL server on 127.0.0.1:5432, as ``bench/run.py`` makes them. The reported line is
the repetition with the median total; ``runs_seconds`` lists all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from htcgrid import codec as codecs
from htcgrid.backends.base import Backend
from htcgrid.backends.blobs import DEFAULT_INLINE_LIMIT
from htcgrid.backends.registry import open_backend
from htcgrid.benchmark.measure import append_line, machine
from htcgrid.client.payloads import HandlerRefs, new_task, outcome
from htcgrid.core.ids import new_session_id
from htcgrid.core.model import Codec, SessionSpec
from htcgrid.core.retry import decide_success
from htcgrid.workloads import noop

BACKENDS = ("sqlite", "redis", "redis-aof", "postgres")
REDIS_SERVERS = {"redis": "redis://127.0.0.1:6379/14", "redis-aof": "redis://127.0.0.1:6380/14"}
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
STAGES = ("submit", "claim", "complete", "read")
#: The client's tasks per submit call (``htcgrid.client.session.SUBMIT_BATCH``).
SUBMIT_BATCH = 2000
#: What a worker claims at a time under W1 (``WorkerSettings.max_batch``: 256 per executor).
AGENT_CLAIM_BATCH = 256
#: The client collector's page of finished tasks.
READ_PAGE = 2000
#: One big batch: the whole submit batch claimed and completed at once.
BIG_BATCH = 2000
LEASE_TTL_S = 15.0
WORKER_ID = "floor-worker"


# -- fresh stores (the same places as bench/run.py's) --------------------------------------
@dataclass
class Store:
    """A fresh, empty store for one repetition, and what it takes to delete it."""

    backend: str
    url: str
    tmp: Path | None = None
    options: dict[str, str] = field(default_factory=dict)


def fresh_store(backend: str) -> Store:
    tag = uuid.uuid4().hex
    if backend in REDIS_SERVERS:
        prefix = f"bench-{tag}"
        return Store(backend, f"{REDIS_SERVERS[backend]}?prefix={prefix}", None, {"prefix": prefix})
    if backend == "postgres":
        schema = f"bench_{tag}"
        return Store(backend, f"{POSTGRES_SERVER}?schema={schema}", None, {"schema": schema})
    tmp = Path(tempfile.mkdtemp(prefix="htcgrid-floor-"))
    return Store(backend, f"sqlite://{tmp / 'grid.db'}", tmp)


def delete_store(store: Store) -> None:
    """Remove what :func:`fresh_store` made: the temporary directory, the Redis prefix's keys
    (``{prefix}:...`` and ``{prefix:session}:...``) or the PostgreSQL schema."""
    if store.tmp is not None:
        shutil.rmtree(store.tmp, ignore_errors=True)
    elif store.backend in REDIS_SERVERS:
        import redis

        prefix = store.options["prefix"]
        with redis.Redis.from_url(REDIS_SERVERS[store.backend]) as client:
            for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*", f"{prefix}-raw:*"):
                keys = list(client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 1000):
                    client.unlink(*keys[i : i + 1000])
    else:
        import psycopg

        schema = store.options["schema"]
        if not schema.startswith("bench_") or not schema.replace("_", "").isalnum():
            raise ValueError(f"not a benchmark schema: {schema!r}")
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- timing -------------------------------------------------------------------------------
class Clock:
    """Wall seconds and this process's CPU seconds, summed per stage over many calls: the
    difference is time spent waiting on the store (round trips, the server's own work)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.cpu_seconds[name] += time.process_time() - c0


#: Process names of the store servers, whose CPU time a repetition on them includes.
STORE_PROCESSES = ("redis-server", "postgres")


def store_cpu_s() -> float:
    """CPU seconds used so far by every Redis and PostgreSQL server process on the machine
    (only the benchmark should be using them; SQLite runs inside this process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() not in STORE_PROCESSES:
                continue
            fields = (comm.parent / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:13])
    return total / tick


@dataclass(frozen=True)
class Batches:
    """Tasks per call of each stage."""

    submit: int = SUBMIT_BATCH
    claim: int = AGENT_CLAIM_BATCH
    complete: int = AGENT_CLAIM_BATCH
    read: int = READ_PAGE


def inputs(n: int) -> list[bytes]:
    """W1's inputs: ~100 bytes each, distinct."""
    return [f"task {i:08d} ".encode().ljust(100, b".") for i in range(n)]


# -- the floor through the project's backends -----------------------------------------------
def run_backend(url: str, n: int, batches: Batches, warm_up: int) -> dict[str, Any]:
    """One repetition through ``open_backend(url)``; stage seconds and client costs."""
    backend = open_backend(url)
    try:
        if warm_up:
            drive(backend, warm_up, batches, Clock())
        clock = Clock()
        server0 = store_cpu_s()
        client_us = drive(backend, n, batches, clock)
        server_s = store_cpu_s() - server0
    finally:
        backend.close()
    return {
        "stages": clock.seconds,
        "cpu": clock.cpu_seconds,
        "server_cpu_s": server_s,
        "client_us": client_us,
    }


def drive(backend: Backend, n: int, batches: Batches, clock: Clock) -> dict[str, float]:
    """Submit, claim+complete and read ``n`` tasks of a new session; time each store call
    into ``clock``. Return the client's encode and decode cost per task (µs), untimed there."""
    session_id = new_session_id()
    backend.create_session(session_id, SessionSpec(name="bench-floor"), time.time())
    ref = HandlerRefs(session_id, backend.blobs).ref(noop)
    values = inputs(n)
    t0 = time.perf_counter()
    tasks = [
        new_task(
            ref,
            v,
            Codec.PICKLE,
            session_id=session_id,
            blobs=backend.blobs,
            inline_limit=DEFAULT_INLINE_LIMIT,
        )
        for v in values
    ]
    encode_s = time.perf_counter() - t0

    for i in range(0, n, batches.submit):
        chunk = tasks[i : i + batches.submit]
        key = uuid.uuid4().hex
        with clock.stage("submit"):
            backend.submit(session_id, chunk, time.time(), batch_key=key)

    done = 0
    while done < n:
        with clock.stage("claim"):
            claims = backend.claim(WORKER_ID, batches.claim, LEASE_TTL_S, time.time())
        if not claims:
            raise RuntimeError(f"claim returned nothing with {n - done} task(s) left")
        # the agent's success completion; noop's pickled result is its pickled input
        completions = [decide_success(c.lease, c.payload, None) for c in claims]
        for j in range(0, len(completions), batches.complete):
            part = completions[j : j + batches.complete]
            with clock.stage("complete"):
                accepted = backend.complete(part, time.time())
            if not all(accepted):
                raise RuntimeError("the store rejected a completion")
        done += len(claims)

    records = []
    cursor = 0
    while len(records) < n:
        with clock.stage("read"):
            page = backend.finished(session_id, cursor, batches.read)
        if not page:
            raise RuntimeError(f"finished() ran dry after {len(records)} of {n}")
        records.extend(page)
        cursor = page[-1].done_seq or cursor + len(page)

    t0 = time.perf_counter()
    for r in records:
        ok, value = outcome(r, backend.blobs)
        if not ok or len(value) != 100:
            raise AssertionError(f"task {r.task_id}: {value!r}")
    decode_s = time.perf_counter() - t0
    return {"encode": encode_s / n * 1e6, "decode": decode_s / n * 1e6}


# -- the raw floor: the plainest driver calls -----------------------------------------------
def run_raw(store: Store, n: int, batches: Batches, warm_up: int) -> dict[str, Any]:
    """The same four stages with the drivers' plainest calls on a minimal schema."""
    runner: Callable[[Store, int, Batches, Clock], None] = {
        "sqlite": raw_sqlite,
        "postgres": raw_postgres,
    }.get(store.backend, raw_redis)
    if warm_up:
        runner(store, warm_up, batches, Clock())
    clock = Clock()
    server0 = store_cpu_s()
    runner(store, n, batches, clock)
    server_s = store_cpu_s() - server0
    return {"stages": clock.seconds, "cpu": clock.cpu_seconds, "server_cpu_s": server_s}


def raw_rows(n: int) -> tuple[str, list[bytes]]:
    """The handler reference and pickled payloads a client would send."""
    ref = "import:htcgrid.workloads:noop"
    return ref, [codecs.encode(v, Codec.PICKLE) for v in inputs(n)]


def read_back(n: int, clock: Clock, page: Callable[[int], Sequence[Any]]) -> None:
    """Read all ``n`` finished rows in ``done_seq`` order, a page (rows whose last column
    is their ``done_seq``) after the cursor at a time, timed as the "read" stage."""
    cursor = 0
    read = 0
    while read < n:
        with clock.stage("read"):
            rows = page(cursor)
        read += len(rows)
        cursor = rows[-1][-1]


def raw_sqlite(store: Store, n: int, batches: Batches, clock: Clock) -> None:
    """sqlite3 in WAL mode, ``synchronous = NORMAL`` like the backend; one transaction per
    batch; claim is one ``UPDATE ... RETURNING`` of the oldest pending keys."""
    import sqlite3

    assert store.tmp is not None
    conn = sqlite3.connect(store.tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute(
        "CREATE TABLE t (key INTEGER PRIMARY KEY, state INTEGER NOT NULL DEFAULT 0, "
        "attempt INTEGER NOT NULL DEFAULT 0, worker TEXT, done_seq INTEGER, "
        "handler TEXT NOT NULL, result BLOB, payload BLOB)"
    )
    conn.execute("CREATE INDEX t_pending ON t(key) WHERE state = 0")
    conn.execute("CREATE INDEX t_done ON t(done_seq) WHERE done_seq IS NOT NULL")
    ref, payloads = raw_rows(n)
    for i in range(0, n, batches.submit):
        rows = [(k, ref, payloads[k]) for k in range(i, min(n, i + batches.submit))]
        with clock.stage("submit"):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t (key, handler, payload) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
    seq = 0
    done = 0
    while done < n:
        with clock.stage("claim"):
            conn.execute("BEGIN IMMEDIATE")
            claimed = conn.execute(
                "UPDATE t SET state = 1, attempt = attempt + 1, worker = ? WHERE key IN "
                "(SELECT key FROM t WHERE state = 0 ORDER BY key LIMIT ?) "
                "RETURNING key, attempt, handler, payload",
                (WORKER_ID, batches.claim),
            ).fetchall()
            conn.execute("COMMIT")
        for j in range(0, len(claimed), batches.complete):
            part = claimed[j : j + batches.complete]
            rows = [(seq + m + 1, p, k, WORKER_ID, a) for m, (k, a, _, p) in enumerate(part)]
            seq += len(part)
            with clock.stage("complete"):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE t SET state = 2, done_seq = ?, result = ? "
                    "WHERE key = ? AND worker = ? AND attempt = ? AND state = 1",
                    rows,
                )
                conn.execute("COMMIT")
        done += len(claimed)
    read_back(
        n,
        clock,
        lambda cursor: conn.execute(
            "SELECT key, state, attempt, result, done_seq FROM t "
            "WHERE done_seq > ? ORDER BY done_seq LIMIT ?",
            (cursor, batches.read),
        ).fetchall(),
    )
    conn.close()


def raw_redis(store: Store, n: int, batches: Batches, clock: Clock) -> None:
    """One pipeline per batch (no MULTI): a hash per task, a pending list, a done list."""
    import redis

    prefix = f"{store.options['prefix']}-raw:{uuid.uuid4().hex[:8]}"
    pending, done_list = f"{prefix}:pending", f"{prefix}:done"
    ref, payloads = raw_rows(n)
    client = redis.Redis.from_url(REDIS_SERVERS[store.backend])
    try:
        for i in range(0, n, batches.submit):
            keys = range(i, min(n, i + batches.submit))
            with clock.stage("submit"):
                pipe = client.pipeline(transaction=False)
                for k in keys:
                    pipe.hset(
                        f"{prefix}:t:{k}",
                        mapping={"state": 0, "attempt": 0, "handler": ref, "payload": payloads[k]},
                    )
                pipe.rpush(pending, *keys)
                pipe.execute()
        done = 0
        while done < n:
            with clock.stage("claim"):
                taken = client.lpop(pending, batches.claim) or []
                pipe = client.pipeline(transaction=False)
                for k in taken:
                    name = f"{prefix}:t:{k.decode()}"
                    pipe.hset(name, mapping={"state": 1, "worker": WORKER_ID})
                    pipe.hincrby(name, "attempt", 1)
                    pipe.hmget(name, "handler", "payload")
                got = pipe.execute()
            claimed = [(k.decode(), got[3 * m + 2][1]) for m, k in enumerate(taken)]
            for j in range(0, len(claimed), batches.complete):
                part = claimed[j : j + batches.complete]
                with clock.stage("complete"):
                    pipe = client.pipeline(transaction=False)
                    for k, payload in part:
                        pipe.hset(f"{prefix}:t:{k}", mapping={"state": 2, "result": payload})
                    pipe.rpush(done_list, *(k for k, _ in part))
                    pipe.execute()
            done += len(claimed)
        read = 0
        while read < n:
            with clock.stage("read"):
                ids = client.lrange(done_list, read, read + batches.read - 1)
                pipe = client.pipeline(transaction=False)
                for k in ids:
                    pipe.hmget(f"{prefix}:t:{k.decode()}", "state", "attempt", "result")
                pipe.execute()
            read += len(ids)
    finally:
        client.close()


def raw_postgres(store: Store, n: int, batches: Batches, clock: Clock) -> None:
    """psycopg: ``executemany`` insert, claim by ``UPDATE ... FOR UPDATE SKIP LOCKED
    RETURNING``, complete by one ``UPDATE ... FROM unnest(...)``; a transaction per batch."""
    import psycopg

    schema = store.options["schema"]
    table = f'"{schema}".raw_{uuid.uuid4().hex[:8]}'
    ref, payloads = raw_rows(n)
    with psycopg.connect(POSTGRES_SERVER) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f"CREATE TABLE {table} (key bigint PRIMARY KEY, state smallint NOT NULL DEFAULT 0, "
            "attempt int NOT NULL DEFAULT 0, worker text, done_seq bigint, handler text NOT NULL,"
            " result bytea, payload bytea)"
        )
        conn.execute(f"CREATE INDEX ON {table} (key) WHERE state = 0")
        conn.execute(f"CREATE INDEX ON {table} (done_seq) WHERE done_seq IS NOT NULL")
        conn.execute(f"CREATE SEQUENCE {table}_seq")
        conn.commit()
        for i in range(0, n, batches.submit):
            rows = [(k, ref, payloads[k]) for k in range(i, min(n, i + batches.submit))]
            with clock.stage("submit"):
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {table} (key, handler, payload) VALUES (%s, %s, %s)", rows
                    )
                conn.commit()
        done = 0
        while done < n:
            with clock.stage("claim"):
                claimed = conn.execute(
                    f"UPDATE {table} SET state = 1, attempt = attempt + 1, worker = %s "
                    f"WHERE key IN (SELECT key FROM {table} WHERE state = 0 ORDER BY key "
                    "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING key, attempt, handler, payload",
                    (WORKER_ID, batches.claim),
                ).fetchall()
                conn.commit()
            for j in range(0, len(claimed), batches.complete):
                part = claimed[j : j + batches.complete]
                with clock.stage("complete"):
                    conn.execute(
                        f"UPDATE {table} AS t SET state = 2, result = u.result, "
                        f"done_seq = nextval('{table}_seq') "
                        "FROM unnest(%s::bigint[], %s::int[], %s::bytea[])"
                        " AS u(key, attempt, result)"
                        " WHERE t.key = u.key AND t.attempt = u.attempt AND t.worker = %s"
                        " AND t.state = 1",
                        (
                            [r[0] for r in part],
                            [r[1] for r in part],
                            [r[3] for r in part],
                            WORKER_ID,
                        ),
                    )
                    conn.commit()
            done += len(claimed)

        def page(cursor: int) -> list[Any]:
            rows = conn.execute(
                f"SELECT key, state, attempt, result, done_seq FROM {table} "
                "WHERE done_seq > %s ORDER BY done_seq LIMIT %s",
                (cursor, batches.read),
            ).fetchall()
            conn.commit()
            return rows

        read_back(n, clock, page)


# -- the driver ---------------------------------------------------------------------------
def repeated(
    backend: str,
    variant: str,
    run: Callable[[Store], dict[str, Any]],
    n: int,
    batches: Batches,
    repeat: int,
) -> dict[str, Any]:
    """``repeat`` repetitions on fresh stores; the line of the median total."""
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        load = os.getloadavg()[0]
        store = fresh_store(backend)
        try:
            result = run(store)
        finally:
            try:
                delete_store(store)
            except Exception as exc:  # do not hide the run's own error behind this one
                print(f"warning: could not delete the store {store.url}: {exc}", file=sys.stderr)
        result["seconds"] = sum(result["stages"].values())
        result["load_avg_1m_before"] = round(load, 2)
        runs.append(result)
        print(
            f"floor {backend} {variant} run {rep + 1}/{repeat}: {result['seconds']:.3f} s "
            + " ".join(f"{k} {v:.3f}" for k, v in result["stages"].items()),
            file=sys.stderr,
        )
    walls = [r["seconds"] for r in runs]
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    stages = {k: round(v, 4) for k, v in median["stages"].items()}
    line: dict[str, Any] = {
        "workload": "floor",
        "variant": variant,
        "backend": backend,
        "n": n,
        "seconds": round(median["seconds"], 4),
        "tasks_per_s": round(n / median["seconds"], 1),
        "stages": stages,
        "per_task_us": {k: round(v / n * 1e6, 2) for k, v in median["stages"].items()},
        "cpu_per_task_us": {k: round(v / n * 1e6, 2) for k, v in median["cpu"].items()},
        "server_cpu_s": round(median["server_cpu_s"], 3),
        "batch": {s: getattr(batches, s) for s in STAGES},
    }
    if "client_us" in median:
        line["client_us"] = {k: round(v, 2) for k, v in median["client_us"].items()}
    line |= {
        "repeat": repeat,
        "runs_seconds": [round(w, 4) for w in walls],
        "seconds_stdev": round(statistics.stdev(walls), 4) if len(walls) > 1 else 0.0,
        "load_avg_1m_before": median["load_avg_1m_before"],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join(["python", "bench/floor.py", *sys.argv[1:]]),
    }
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median)")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per repetition")
    parser.add_argument(
        "--claim-batch",
        type=int,
        default=AGENT_CLAIM_BATCH,
        help=f"tasks per claim in the agent variant (default {AGENT_CLAIM_BATCH})",
    )
    parser.add_argument(
        "--complete-batch",
        type=int,
        help="tasks per complete in the agent variant (default: the claim batch)",
    )
    parser.add_argument(
        "--big-batch", type=int, default=BIG_BATCH, help="claim and complete batch of 'big'"
    )
    parser.add_argument(
        "--variants", default="agent,big", help="some of agent,big,raw (default agent,big)"
    )
    parser.add_argument("--raw", action="store_true", help="add the raw variant")
    parser.add_argument("--warm-up", type=int, default=1000, help="untimed tasks first")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if min(args.repeat, args.tasks, args.claim_batch, args.big_batch) < 1:
        parser.error("--repeat, --tasks and batch sizes must be at least 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.raw and "raw" not in variants:
        variants.append("raw")
    unknown = set(variants) - {"agent", "big", "raw"}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")

    agent = Batches(claim=args.claim_batch, complete=args.complete_batch or args.claim_batch)
    big = Batches(claim=args.big_batch, complete=args.big_batch)
    plans: dict[str, tuple[Batches, Callable[[Store], dict[str, Any]]]] = {}
    for variant in variants:
        b = big if variant == "big" else agent
        if variant == "raw":
            plans[variant] = (b, lambda s, b=b: run_raw(s, args.tasks, b, args.warm_up))
        else:
            plans[variant] = (b, lambda s, b=b: run_backend(s.url, args.tasks, b, args.warm_up))
    for variant, (b, run) in plans.items():
        line = json.dumps(repeated(args.backend, variant, run, args.tasks, b, args.repeat))
        print(line, flush=True)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
