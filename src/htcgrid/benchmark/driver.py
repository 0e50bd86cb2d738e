"""Repetitions of the benchmark workloads, each in a fresh child process, and the JSON record
of their median.

A fresh process per repetition means the client's peak RSS, its caches and its threads start
clean every time, and a fresh embedded grid (with a fresh store where the caller can make
one) means no repetition inherits another's tasks. The parent only plans, spawns, collects
and picks the median; the child (``python -m htcgrid.benchmark``, reading a :class:`Spec`
as JSON on stdin) starts the grid, warms it up, runs one workload and prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec

import htcgrid
from htcgrid.backends.registry import open_backend
from htcgrid.benchmark.churn import KILL_EVERY_S, LEASE_TTL_S, REAPER_PERIOD_S, w6_churn
from htcgrid.benchmark.measure import (
    RssSampler,
    cpu_delta,
    cpu_seconds,
    machine,
    memory_report,
)
from htcgrid.benchmark.runs import Run, warm_up
from htcgrid.core.errors import GridError, InvalidInput

#: Workloads a child runs; W7 is W1 and W3 over several worker counts, planned by the parent.
CHILD_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
WORKLOADS = (*CHILD_WORKLOADS, "W7")
#: Workloads that need worker processes of their own (W6 kills them, W7 counts them).
LOCAL_ONLY = frozenset({"W6", "W7"})
#: W7 (scale-out) runs these workloads with each of these worker-process counts.
SCALE_OUT_WORKLOADS = ("W1", "W3")
SCALE_OUT_WORKERS = (1, 2, 4, 8)
#: Longest a single repetition may take before it is abandoned.
RUN_TIMEOUT_S = 3600.0
#: What the ``grid`` field of a record says for a fresh grid per repetition.
FRESH = "fresh embedded"

Mode = Literal["embedded", "store", "api"]


class BenchError(Exception):
    """A repetition failed; the message says which and how."""


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    """One repetition, as the parent hands it to a child (JSON on stdin: store URLs may
    carry passwords, which command lines would show to every user of the machine)."""

    workload: str
    mode: Mode
    url: str | None = None  # embedded: a fresh store (None: SQLite in a temp dir)
    workers: int = 2  # local worker processes; 0: the grid's own, already serving
    concurrency: int = 1
    codec: str = "pickle"
    scale: float = 1.0
    tmpdir: str | None = None
    timeout_s: float = RUN_TIMEOUT_S
    kill_every_s: float = KILL_EVERY_S


@dataclass(frozen=True, slots=True)
class Target:
    """Where repetitions run.

    ``embedded``: a fresh embedded grid per repetition, on a SQLite file in a temporary
    directory, or on the store ``fresh_store`` makes (and deletes) for each repetition.
    ``store``: the store at ``url``, with a fresh embedded grid of local workers per
    repetition, or with the workers already serving it (``workers=0``).
    ``api``: the HTTP API at ``url``, with ``token``; its workers are its own.
    """

    mode: Mode = "embedded"
    url: str | None = None
    token: str | None = None
    backend: str = "sqlite"
    fresh_store: Callable[[], AbstractContextManager[str | None]] | None = None

    @property
    def grid(self) -> str:
        """The record's ``grid`` field: what each repetition ran on (never a password)."""
        if self.mode == "embedded":
            return FRESH
        return f"{self.mode} {redact(self.url or '')}"

    @property
    def backend_label(self) -> str:
        if self.mode == "store" and self.url:
            return self.url.partition("://")[0]
        return "api" if self.mode == "api" else self.backend


@dataclass(frozen=True, slots=True)
class Options:
    """How every repetition runs."""

    workers: int = 2
    concurrency: int = 1
    codec: str = "pickle"
    scale: float = 1.0
    repeat: int = 3
    tmpdir: str | None = None
    kill_every_s: float = KILL_EVERY_S
    scale_out_workers: tuple[int, ...] = SCALE_OUT_WORKERS


def redact(url: str) -> str:
    """``url`` with its password (in the address or a ``password=`` option) replaced, and
    otherwise exactly as given."""
    parts = urlsplit(url)
    if parts.password is not None:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    base, mark, query = url.partition("?")
    if mark:
        secret = ("password", "token", "secret")
        pairs = parse_qsl(query, keep_blank_values=True)
        hidden = [(k, "***" if any(s in k.lower() for s in secret) else v) for k, v in pairs]
        if hidden != pairs:
            url = f"{base}?{urlencode(hidden, safe='*')}"
    return url


def plan(workloads: list[str], target: Target, options: Options) -> list[tuple[str, str, int]]:
    """(workload a child runs, label of its record, local worker processes) per record, in
    order; InvalidInput for an unknown workload or one the target cannot run."""
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise InvalidInput(
            f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}"
        )
    local = target.mode != "api" and options.workers > 0
    for w in workloads:
        if w in LOCAL_ONLY and not local:
            why = "kills local worker processes" if w == "W6" else "starts 1-8 local workers"
            raise InvalidInput(
                f"{w} {why}: it needs a grid of local workers, not the API's or a store's own"
            )
    steps: list[tuple[str, str, int]] = []
    for w in workloads:
        if w == "W7":
            steps += [
                (s, f"W7:{s}", n) for n in options.scale_out_workers for s in SCALE_OUT_WORKLOADS
            ]
        else:
            steps.append((w, w, options.workers))
    return steps


def run_plan(
    workloads: list[str],
    target: Target,
    options: Options,
    *,
    command: str,
    progress: Callable[[str], None],
) -> Iterator[dict[str, Any] | BenchError]:
    """Run every planned record's repetitions; yield each record, or the error that stopped
    it (the next record still runs)."""
    for workload, label, workers in plan(workloads, target, options):
        try:
            yield repeated(
                workload,
                label,
                target,
                options,
                workers=workers,
                command=command,
                progress=progress,
            )
        except BenchError as exc:
            yield exc


def repeated(
    workload: str,
    label: str,
    target: Target,
    options: Options,
    *,
    workers: int,
    command: str,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``workload`` ``options.repeat`` times, each in a fresh child process (on a fresh
    store when ``target`` makes them); return the median-wall-time run's record."""
    runs: list[dict[str, Any]] = []
    local = target.mode != "api" and workers > 0
    layout = (
        f"{workers} worker x {options.concurrency} executor"
        if local
        else ("the grid's own workers" if target.mode == "api" else "the store's own workers")
    )
    for rep in range(1, options.repeat + 1):
        fresh = target.fresh_store() if target.fresh_store else nullcontext(None)
        with fresh as fresh_url:
            spec = Spec(
                workload=workload,
                mode=target.mode,
                url=fresh_url if target.mode == "embedded" else target.url,
                workers=workers if local else 0,
                concurrency=options.concurrency,
                codec=options.codec,
                scale=options.scale,
                tmpdir=options.tmpdir,
                kill_every_s=options.kill_every_s,
            )
            record = spawn(spec, target.token)
        runs.append(record)
        progress(
            f"{label} {target.backend_label} {layout} run {rep}/{options.repeat}: "
            f"{record['seconds']:.3f} s"
        )
    walls = [r["seconds"] for r in runs]
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    executors = workers * options.concurrency if local else median.get("executors_seen")
    return {
        "workload": label,
        "backend": target.backend_label,
        **median,
        "workers": executors,
        "layout": layout,
        "codec": options.codec,
        "grid": target.grid,
        "grid_dir": (options.tmpdir or tempfile.gettempdir()) if local else None,
        "scale": options.scale,
        "repeat": options.repeat,
        "runs_seconds": walls,
        "seconds_stdev": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        # every repetition's CPU and latency, not only the median's: whether a slow run
        # spent more CPU (the grid's, the store's) or waited on a busier machine
        "runs_cpu_s": [r.get("cpu_s") for r in runs],
        "runs_p50_ms": [r.get("p50_ms") for r in runs],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
    }


def spawn(spec: Spec, token: str | None) -> dict[str, Any]:
    """Run one repetition in a fresh ``python -m htcgrid.benchmark``; its record."""
    env = dict(os.environ)
    paths = [p for p in [os.getcwd(), *sys.path] if p]  # the same imports as this process
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if token:
        from htcgrid.client.http import TOKEN_ENV  # the API's client needs its extra

        env[TOKEN_ENV] = token  # the environment, not the command line: ps shows that
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "htcgrid.benchmark"],
            input=msgspec.json.encode(spec).decode(),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            timeout=spec.timeout_s + 120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{spec.workload}: a run took over {spec.timeout_s:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BenchError(f"{spec.workload}: a run failed (exit {proc.returncode}, see above)")
    record: dict[str, Any] = json.loads(lines[-1])
    return record


# -- the child ----------------------------------------------------------------------------
def run_child(spec: Spec) -> dict[str, Any]:
    """One repetition: start the grid the spec names, warm it up, run and measure."""
    load_1m = os.getloadavg()[0]  # a busy machine explains an outlier
    local = spec.mode != "api" and spec.workers > 0
    churn = spec.workload == "W6"
    with tempfile.TemporaryDirectory(prefix="htcgrid-bench-", dir=spec.tmpdir) as tmp:
        embedded = None
        url = spec.url
        # W6 kills workers: a short lease and a brisk reaper make their tasks come back soon
        timing: dict[str, Any] = {}
        if churn:
            timing = {"lease_ttl_s": LEASE_TTL_S, "reaper_period_s": REAPER_PERIOD_S}
        if local:
            embedded = htcgrid.EmbeddedGrid(
                home=Path(tmp),
                store_url=spec.url,  # None: a SQLite store in ``tmp``
                workers=spec.workers,
                concurrency=spec.concurrency,
                log_dir=Path(tmp) / "logs",
                **timing,
            ).start()
            url = embedded.url
        try:
            grid = htcgrid.connect(url, start_workers=False)
        except BaseException:
            if embedded is not None:
                embedded.stop()
            raise
        run = Run(grid, spec.codec, spec.scale, spec.timeout_s)
        try:
            executors = spec.workers * spec.concurrency if local else None
            rounds, seen = warm_up(grid, executors)

            def pids() -> list[int]:
                return embedded.pids if embedded is not None else []

            cpu_before = cpu_seconds(pids())
            extra: dict[str, Any] = {}
            if spec.workload == "W5":
                scheme = (url or "").partition("://")[0]
                with_store = spec.mode != "api" and scheme in {"redis", "postgresql", "postgres"}
                port = urlsplit(url).port or 6379 if scheme == "redis" else None
                with RssSampler(
                    pids, done=lambda: run.done, store_port=port, with_store=with_store
                ) as sampler:
                    record = run.w5_million()
                sampled = sampler.summary()
                extra["rss_sampled_mb"] = sampled
                if "store" in sampled:
                    extra["store_rss_mb"] = sampled["store"]
                if embedded is not None and embedded.store_path is not None:
                    extra["store_file_mb"] = sqlite_mb(embedded.store_path)
            elif churn:
                assert embedded is not None
                backend = open_backend(embedded.url)
                try:
                    record = w6_churn(run, embedded, backend, spec.kill_every_s)
                finally:
                    backend.close()
            else:
                method = {
                    "W1": run.w1_noop,
                    "W2": run.w2_latency,
                    "W3": run.w3_cpu,
                    "W4": run.w4_payload,
                }[spec.workload]
                record = method()
            cpu_after = cpu_seconds(pids())
            memory = memory_report(pids())
        finally:
            if spec.mode != "embedded":  # the store outlives this run: leave it as it was
                _delete_sessions(grid, run.session_ids)
            grid.close()
            if embedded is not None:
                embedded.stop()
    record["tasks_per_s"] = record["n"] / record["seconds"]
    if spec.workload == "W3":
        n_exec = executors or seen
        record["efficiency"] = (record["n"] * 0.010 / max(1, n_exec)) / record["seconds"]
    record["peak_rss_mb"] = memory
    record.update(extra)
    record["warm_up_rounds"] = rounds
    record["executors_seen"] = seen
    record["load_avg_1m_before"] = round(load_1m, 2)
    record["cores"] = os.cpu_count()
    cpu: dict[str, float | None] = dict(cpu_delta(cpu_before, cpu_after))
    if churn:  # killed workers and their executors took their CPU time with them
        for key in ("grid", "grid_agents", "grid_executors", "foreign"):
            cpu[key] = None
    record["cpu_s"] = cpu
    return record


def sqlite_mb(store: Path) -> float:
    """Size of a SQLite store on disk: the database file, its WAL and its WAL index (``-shm``)
    (blobs, kept beside it as files, are not counted)."""
    files = [store.with_name(store.name + suffix) for suffix in ("", "-wal", "-shm")]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 2**20, 1)


def _delete_sessions(grid: htcgrid.Grid, session_ids: list[str]) -> None:
    for sid in session_ids:
        try:
            grid.delete_session(sid)
        except GridError as exc:
            print(f"warning: could not delete session {sid}: {exc}", file=sys.stderr)


def child_main() -> int:
    """``python -m htcgrid.benchmark``: a :class:`Spec` on stdin, one JSON record on stdout."""
    try:
        spec = msgspec.json.decode(sys.stdin.read(), type=Spec)
    except msgspec.DecodeError as exc:
        print(f"error: not a benchmark spec: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        record = run_child(spec)
    except GridError as exc:
        print(f"error: {spec.workload}: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(
            f"error: {spec.workload} failed after {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(record), flush=True)
    return 0
