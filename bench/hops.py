"""The floor under W2: what one round trip's hops cost on this machine, with no grid logic;
one JSON line per variant, latencies in microseconds.

    python bench/hops.py
    python bench/hops.py --rounds 5000 --out bench/results/hops.jsonl

W2 (docs/benchmarks.md) times one task at a time from ``submit`` to its result. Through a
store, that task crosses three processes and the store server: the client writes it, a
worker agent is woken and claims it, hands it to its executor process and gets the outcome
back, writes the completion, and the client is woken to read it. Each hand-over is a
wake-up of a sleeping process. This script times the same shape with the plainest Python
that can carry it, so a W2 latency can be read against what the machine allows:

- ``pipe``: a byte to another process and back over a pipe (two wake-ups);
- ``redis-rtt`` / ``postgres-rtt``: one ``PING`` on a raw socket, one ``SELECT 1`` through
  psycopg (the store's round trip, as low as Python gets it);
- ``processes``: the W2 shape without a store: client -> agent -> executor -> agent ->
  client, each a separate process, over pipes (four wake-ups);
- ``redis-w2``: the W2 shape through Redis: the client ``LPUSH``es a task and blocks in
  ``BLPOP`` for its result; the agent, blocked in ``BLPOP``, is woken by the task, passes it
  to its executor over a pipe, gets it back and ``LPUSH``es the result. Raw sockets, no
  claim script, no lease, no encoding: two store round trips fewer than the grid's
  (claim, complete), and no second worker.
- ``sqlite-w2``: the W2 shape through a SQLite file in WAL mode, with the writes a durable
  grid cannot do without: the client commits the task, the agent commits its claim and,
  after the executor's round trip, the result, and the client reads the result back. Each
  hand-over is a byte on a pipe (the cheapest wake-up there is; the grid's processes are not
  each other's parents, so it uses files). Three write transactions, one read, no second
  worker.
- ``postgres-w2``: the same shape through PostgreSQL, with ``LISTEN``/``NOTIFY`` for the
  wake-ups, as the grid does: the client inserts the task and notifies in one statement, the
  agent is woken, claims it in one ``UPDATE``, passes it through the executor and stores the
  result with a notification in one statement, and the client, woken, selects the result.
  Every write is its own transaction, flushed at commit (claims must be, see
  docs/postgres.md): three flushed commits and four round trips, no second worker.

Redis is the server on 127.0.0.1:6379 (database 14, keys deleted afterwards); PostgreSQL is
the ``test`` database on 127.0.0.1:5432 (a table made for the run and dropped afterwards);
SQLite's file is made in a temporary directory. A variant whose server cannot be reached is
left out with a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from htcgrid.benchmark.measure import append_line, machine

REDIS = ("127.0.0.1", 6379)
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
    }


def timed(rounds: int, one: Callable[[], object]) -> list[float]:
    """``one`` run ``rounds`` times after a tenth as many untimed; each run's seconds."""
    for _ in range(max(10, rounds // 10)):
        one()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        one()
        samples.append(time.perf_counter() - start)
    return samples


# -- processes over pipes -----------------------------------------------------------------
def echo(read_fd: int, write_fd: int) -> None:
    """Child: write back every byte read, until end of input."""
    while data := os.read(read_fd, 64):
        os.write(write_fd, data)
    os._exit(0)


def relay(read_fd: int, write_fd: int, down: tuple[int, int]) -> None:
    """Child: pass every byte read down a pipe pair and its answer back up."""
    down_w, down_r = down
    while data := os.read(read_fd, 64):
        os.write(down_w, data)
        os.write(write_fd, os.read(down_r, 64))
    os._exit(0)


def fork(target: Callable[..., None], *args: Any, close: Sequence[int] = ()) -> int:
    """Run ``target(*args)`` in a child that first closes ``close`` (the parent's pipe ends,
    so that the parent closing its write end is the child's end of input)."""
    pid = os.fork()
    if pid == 0:
        try:
            for fd in close:
                os.close(fd)
            target(*args)
        finally:
            os._exit(1)
    return pid


def pipe_pair() -> tuple[tuple[int, int], tuple[int, int]]:
    """Two pipes: (parent's write, child's read), (child's write, parent's read)."""
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    return (down_w, down_r), (up_w, up_r)


def ping(rounds: int, write_fd: int, read_fd: int) -> list[float]:
    """Time a byte written to ``write_fd`` until its answer is read from ``read_fd``."""

    def one() -> None:
        os.write(write_fd, b"x")
        os.read(read_fd, 64)

    return timed(rounds, one)


def run_pipe(rounds: int) -> list[float]:
    (down_w, down_r), (up_w, up_r) = pipe_pair()
    pid = fork(echo, down_r, up_w, close=[down_w, up_r])
    try:
        return ping(rounds, down_w, up_r)
    finally:
        os.close(down_w)
        os.waitpid(pid, 0)


def run_processes(rounds: int) -> list[float]:
    (ex_w, ex_r), (ex_up_w, ex_up_r) = pipe_pair()
    executor = fork(echo, ex_r, ex_up_w, close=[ex_w, ex_up_r])
    (ag_w, ag_r), (ag_up_w, ag_up_r) = pipe_pair()
    agent = fork(relay, ag_r, ag_up_w, (ex_w, ex_up_r), close=[ag_w, ag_up_r, ex_r, ex_up_w])
    try:
        return ping(rounds, ag_w, ag_up_r)
    finally:
        os.close(ag_w)
        os.waitpid(agent, 0)
        os.close(ex_w)
        os.waitpid(executor, 0)


# -- Redis --------------------------------------------------------------------------------
def resp(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def redis_socket() -> socket.socket:
    sock = socket.create_connection(REDIS, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(resp(b"SELECT", b"14"))
    sock.recv(64)
    return sock


def redis_call(sock: socket.socket, command: bytes) -> bytes:
    """Send one command and read its (small) reply."""
    sock.sendall(command)
    return sock.recv(4096)


def run_redis_rtt(rounds: int) -> list[float]:
    sock = redis_socket()
    ping = resp(b"PING")
    try:
        return timed(rounds, lambda: redis_call(sock, ping) and None)
    finally:
        sock.close()


def redis_agent(tasks: bytes, results: bytes, down: tuple[int, int]) -> None:
    """Child: pop each task (blocking), pass it through the executor, push the result."""
    sock = redis_socket()
    sock.settimeout(None)
    down_w, down_r = down
    pop = resp(b"BLPOP", tasks, b"0")
    while True:
        reply = redis_call(sock, pop)
        value = reply.rsplit(b"\r\n", 2)[-2]
        if value == b"stop":
            os._exit(0)
        os.write(down_w, value)
        redis_call(sock, resp(b"LPUSH", results, os.read(down_r, 64)))


def run_redis_w2(rounds: int) -> list[float]:
    prefix = f"hops:{uuid.uuid4().hex}".encode()
    tasks, results = prefix + b":tasks", prefix + b":results"
    (ex_w, ex_r), (ex_up_w, ex_up_r) = pipe_pair()
    executor = fork(echo, ex_r, ex_up_w, close=[ex_w, ex_up_r])
    agent = fork(redis_agent, tasks, results, (ex_w, ex_up_r), close=[ex_r, ex_up_w])
    sock = redis_socket()
    push, pop = resp(b"LPUSH", tasks, b"task"), resp(b"BLPOP", results, b"0")

    def one() -> None:
        redis_call(sock, push)
        redis_call(sock, pop)

    try:
        return timed(rounds, one)
    finally:
        redis_call(sock, resp(b"LPUSH", tasks, b"stop"))
        os.waitpid(agent, 0)
        os.close(ex_w)
        os.waitpid(executor, 0)
        redis_call(sock, resp(b"DEL", tasks, results))
        sock.close()


# -- SQLite -------------------------------------------------------------------------------
def sqlite_open(path: str) -> sqlite3.Connection:
    """A connection as the grid opens one: autocommit, WAL, synchronous NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def sqlite_agent(path: str, wake_r: int, done_w: int, down: tuple[int, int]) -> None:
    """Child: woken by a byte, claim the oldest pending task, pass it through the executor,
    commit its result, wake the client."""
    conn = sqlite_open(path)
    down_w, down_r = down
    while os.read(wake_r, 64):
        conn.execute("BEGIN IMMEDIATE")
        key, payload = conn.execute(
            "UPDATE tasks SET state = 1 WHERE key = (SELECT min(key) FROM tasks WHERE state = 0)"
            " RETURNING key, payload"
        ).fetchone()
        conn.execute("COMMIT")
        os.write(down_w, payload)
        result = os.read(down_r, 64)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE tasks SET state = 2, result = ? WHERE key = ?", (result, key))
        conn.execute("COMMIT")
        os.write(done_w, b"x")
    os._exit(0)


def run_sqlite_w2(rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="hops-") as tmp:
        path = os.path.join(tmp, "w2.db")
        conn = sqlite_open(path)
        conn.execute(
            "CREATE TABLE tasks (key INTEGER PRIMARY KEY, state INTEGER, payload BLOB, result BLOB)"
        )
        conn.execute("CREATE INDEX tasks_pending ON tasks (key) WHERE state = 0")
        (ex_w, ex_r), (ex_up_w, ex_up_r) = pipe_pair()
        executor = fork(echo, ex_r, ex_up_w, close=[ex_w, ex_up_r])
        (wake_w, wake_r), (done_w, done_r) = pipe_pair()
        agent = fork(
            sqlite_agent,
            path,
            wake_r,
            done_w,
            (ex_w, ex_up_r),
            close=[ex_r, ex_up_w, wake_w, done_r],
        )
        os.close(wake_r)
        os.close(done_w)

        def one() -> None:
            conn.execute("BEGIN IMMEDIATE")
            key = conn.execute(
                "INSERT INTO tasks (state, payload) VALUES (0, ?)", (b"task",)
            ).lastrowid
            conn.execute("COMMIT")
            os.write(wake_w, b"x")
            os.read(done_r, 64)
            conn.execute("SELECT result FROM tasks WHERE key = ?", (key,)).fetchone()

        try:
            return timed(rounds, one)
        finally:
            os.close(wake_w)
            os.waitpid(agent, 0)
            os.close(ex_w)
            os.waitpid(executor, 0)
            conn.close()


# -- PostgreSQL ---------------------------------------------------------------------------
def run_postgres_rtt(rounds: int) -> list[float]:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        return timed(rounds, lambda: conn.execute("SELECT 1").fetchone() and None)


def postgres_agent(table: str, ready_w: int, down: tuple[int, int]) -> None:
    """Child: say on ``ready_w`` that it listens; then, woken by a notification, claim the
    oldest pending task, pass it through the executor, store its result and notify the
    client, each write its own transaction."""
    import psycopg

    down_w, down_r = down
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"LISTEN {table}_work")
        os.write(ready_w, b"x")
        claim = (
            f"UPDATE {table} SET state = 1 WHERE key = (SELECT key FROM {table} WHERE state = 0"
            " ORDER BY key LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key, payload"
        )
        complete = (
            f"WITH done AS (UPDATE {table} SET state = 2, result = %s WHERE key = %s)"
            f" SELECT pg_notify('{table}_done', '')"
        )
        while True:
            # the generator holds the connection until it ends: wait, then claim
            notes = [note.payload for note in conn.notifies(stop_after=1)]
            if "stop" in notes:
                break
            row = conn.execute(claim).fetchone()
            if row is None:
                continue
            os.write(down_w, row[1])
            conn.execute(complete, (os.read(down_r, 64), row[0]))
    os._exit(0)


def run_postgres_w2(rounds: int) -> list[float]:
    import psycopg

    table = f"hops_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (key bigserial PRIMARY KEY, state smallint NOT NULL,"
            " payload bytea, result bytea)"
        )
        conn.execute(f"LISTEN {table}_done")
        (ex_w, ex_r), (ex_up_w, ex_up_r) = pipe_pair()
        executor = fork(echo, ex_r, ex_up_w, close=[ex_w, ex_up_r])
        ready_r, ready_w = os.pipe()
        agent = fork(
            postgres_agent, table, ready_w, (ex_w, ex_up_r), close=[ex_r, ex_up_w, ready_r]
        )
        os.close(ready_w)
        submit = (
            f"WITH t AS (INSERT INTO {table} (state, payload) VALUES (0, %s) RETURNING key)"
            f" SELECT t.key, pg_notify('{table}_work', '') FROM t"
        )
        read = f"SELECT result FROM {table} WHERE key = %s"

        def one() -> None:
            row = conn.execute(submit, (b"task",)).fetchone()
            assert row is not None
            for _ in conn.notifies(stop_after=1):
                pass
            conn.execute(read, (row[0],)).fetchone()

        try:
            is_listening = os.read(ready_r, 1)  # a notification sent before would be lost
            os.close(ready_r)
            if not is_listening:
                raise OSError("the PostgreSQL agent did not start")
            return timed(rounds, one)
        finally:
            conn.execute(f"NOTIFY {table}_work, 'stop'")
            os.waitpid(agent, 0)
            os.close(ex_w)
            os.waitpid(executor, 0)
            conn.execute(f"DROP TABLE {table}")


VARIANTS: dict[str, Callable[[int], list[float]]] = {
    "pipe": run_pipe,
    "processes": run_processes,
    "redis-rtt": run_redis_rtt,
    "redis-w2": run_redis_w2,
    "sqlite-w2": run_sqlite_w2,
    "postgres-rtt": run_postgres_rtt,
    "postgres-w2": run_postgres_w2,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000, help="timed round trips each")
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join(["python", "bench/hops.py", *sys.argv[1:]]),
    }
    for name in names:
        try:
            samples = VARIANTS[name](args.rounds)
        except OSError as exc:  # psycopg's errors are OSErrors too
            print(f"{name}: left out: {exc}", file=sys.stderr)
            continue
        record = {"variant": name, "rounds": args.rounds, **percentiles(samples), **stamp}
        line = json.dumps(record)
        print(line, flush=True)
        append_line(args.out, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
