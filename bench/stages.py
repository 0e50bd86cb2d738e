"""Where a real W1 spends its time: each process of the grid sampled with py-spy, every sample
put in a stage by the project functions on its stack; one table per process.

    sudo python bench/stages.py --backend sqlite
    python bench/stages.py --backend redis --out bench/results/profile-redis.txt
    python bench/stages.py --backend postgres --rate 500 --keep /tmp/htcgrid-profile

W1 is 20,000 no-op tasks with ~100-byte inputs on a fresh embedded grid of 2 worker
processes x 1 executor (docs/benchmarks.md). A child process starts the grid, warms it up,
runs one W1 unprofiled (the reference time), then waits while this script attaches one
``py-spy record`` (``--threads --format speedscope``) to each process: the client (which also
hosts the reaper), both worker (agent) processes and both executor processes. The child then
runs W1 again under the samplers, and the samplers are stopped as soon as it is done.

It does this twice, each time on a fresh grid and store:

- **wall pass** (``--idle``): every thread is sampled whether it runs or waits, so a stage's
  share of samples is its share of the thread's time, waits included. Only the samples of a
  process's *busy window* count: for the client, the samples where its main thread is inside
  the timed W1; for an agent or an executor, from the first to the last sample of its main
  thread that is not waiting (the grid's idle time before and after W1 is left out).
- **CPU pass** (no ``--idle``): py-spy keeps only samples of threads on a CPU, so
  samples / rate are CPU-seconds per stage. The short idle lead-in before W1 is included (it
  is "wait" CPU: the store polls of an idle agent), except the client's main thread, whose
  samples outside W1 are dropped.

Sampling costs the targets time (py-spy pauses a process for each sample unless
``--nonblocking``), and five samplers share the two cores with the grid: the report gives the
profiled and unprofiled W1 times side by side. The classification rules are ``RULES`` below;
each sample goes to the first rule that matches any frame of its stack. The raw py-spy files
stay in a temporary directory (``--keep DIR`` to choose it), never in the repository. py-spy
must be able to attach (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floor import BACKENDS, Store, delete_store, fresh_store, inputs, machine

import htcgrid
from htcgrid.workloads import noop

#: W1's size and the client's submit batch.
W1_TASKS = 20_000
SUBMIT_BATCH = 2000
#: Seconds between starting the samplers and starting W1 (py-spy attaching).
LEAD_S = 0.3
CHILD_TIMEOUT_S = 300.0

STAGES = ("encode", "submit", "claim", "execute", "complete", "collect", "upkeep", "wait", "other")


# -- classification -------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """A sample belongs to ``stage`` when a frame of its stack is in a file whose path
    contains ``file`` and (when ``names`` is given) its function's short name is one of
    ``names``; with ``leaf``, only the innermost frame is looked at."""

    stage: str
    file: str
    names: frozenset[str] | None = None
    leaf: bool = False

    def matches(self, stack: Sequence[Frame]) -> bool:
        frames = stack[-1:] if self.leaf else stack
        return any(
            self.file in f.file and (self.names is None or f.short in self.names) for f in frames
        )


def rule(stage: str, file: str, *names: str, leaf: bool = False) -> Rule:
    return Rule(stage, file, frozenset(names) if names else None, leaf)


#: Blocked, sleeping or waiting for a wake-up. Python frames only: a thread blocked in a C
#: call shows the Python function that made it as its innermost frame.
WAITS = (
    # the store's wake-ups: an idle agent waiting for work, the collector for results
    rule("wait", "htcgrid/", "wait_for_work", "wait_for_finished", "_wait_until"),
    # Condition/Event waits: Future.result in the client, the heartbeat's and reaper's sleeps
    rule("wait", "threading.py", "wait", "join"),
    # the agent waiting on its executors' sockets, process sentinels and its wake-up pipe
    rule("wait", "multiprocessing/connection.py", "wait"),
    rule("wait", "selectors.py", "select"),
    rule("wait", "htcgrid/client/futures.py", "_pause"),
    # an executor's sender thread blocked on its empty outbox (a C-level queue get)
    rule("wait", "htcgrid/worker/executor.py", "_send_loop", leaf=True),
)

#: The rules of each kind of process, tried in order; no match is "other".
RULES: dict[str, tuple[Rule, ...]] = {
    "client": (
        *WAITS,
        # encoding inputs into NewTasks (pickle, the handler reference)
        rule("encode", "htcgrid/client/payloads.py", "new_task", "ref"),
        rule("encode", "htcgrid/codec.py", "encode"),
        # the submit round trip, and registering the batch's futures with the collector
        rule("submit", "htcgrid/client/session.py", "_submit_batch", "submit_many"),
        # the collector thread: finished() pages, outcome decoding, resolving futures
        # (and the benchmark's own done-callbacks, which run there)
        rule("collect", "htcgrid/client/futures.py"),
        rule("collect", "htcgrid/client/payloads.py", "outcome"),
        # the reaper thread and the embedded grid's supervisor
        rule("upkeep", "htcgrid/reaper/"),
        rule("upkeep", "htcgrid/embedded.py"),
    ),
    "agent": (
        *WAITS,
        rule("upkeep", "htcgrid/worker/heartbeat.py"),
        # the claim round trip, then turning claims into attempts (payloads, handlers)
        rule("claim", "htcgrid/worker/agent.py", "_claim", "_prepare"),
        # building completions and the complete round trip
        rule("complete", "htcgrid/worker/agent.py", "_flush", "_succeed", "_fail"),
        # feeding executors and taking their outcomes: batches, sockets, the sender threads
        rule("execute", "htcgrid/worker/pool.py"),
        rule("execute", "htcgrid/worker/channel.py"),
        rule("execute", "htcgrid/worker/executor.py"),
        rule("execute", "htcgrid/worker/protocol.py"),
    ),
    "executor": (
        # running the handler: decode the input, call it, encode the result
        rule("execute", "htcgrid/worker/executor.py", "run_work"),
        # reading the next batch (blocks when the queue is empty)
        rule("wait", "htcgrid/worker/channel.py", "receive"),
        # sending outcomes, decoding batches, the loop itself
        rule("execute", "htcgrid/worker/channel.py"),
        rule("execute", "htcgrid/worker/executor.py", "executor_main"),
        *WAITS,
    ),
}
#: The timed W1 of the child; the client's main-thread samples outside it are dropped.
TIMED_FUNCTION = "profiled_w1"


@dataclass(frozen=True)
class Frame:
    name: str
    file: str

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def classify(role: str, stack: Sequence[Frame]) -> str:
    for r in RULES[role]:
        if r.matches(stack):
            return r.stage
    return "other"


# -- reading py-spy's speedscope files --------------------------------------------------------
@dataclass
class ThreadSamples:
    name: str
    stacks: list[tuple[Frame, ...]]  # root first, in sampling order
    seconds_per_sample: float


def read_speedscope(path: Path) -> list[ThreadSamples]:
    data = json.loads(path.read_text())
    frames = [Frame(f["name"], f.get("file") or "") for f in data["shared"]["frames"]]
    threads = []
    for profile in data["profiles"]:
        weights = profile["weights"]
        per = (sum(weights) / len(weights)) if weights else 0.0
        # speedscope stacks are root first
        stacks = [tuple(frames[i] for i in sample) for sample in profile["samples"]]
        threads.append(ThreadSamples(profile["name"], stacks, per))
    return threads


@dataclass
class ProcessProfile:
    """One process's samples per stage and per thread, from one pass."""

    role: str
    pid: int
    by_thread: dict[str, Counter[str]] = field(default_factory=dict)
    leaves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, function)
    window_s: float = 0.0

    @property
    def samples(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.by_thread.values():
            total.update(counts)
        return total


def thread_label(profile_name: str) -> str:
    """``Thread 123 "htcgrid-collector-s1f2"`` -> ``collector``: a short, stable name."""
    name = profile_name.split('"')[1] if '"' in profile_name else profile_name
    if name.startswith("htcgrid-collector-"):
        return "collector"
    if name.startswith("htcgrid-executor-"):  # htcgrid-executor-<n>-sender
        return "sender-" + name.split("-")[2]
    return {"MainThread": "main", "": "unnamed"}.get(name, name.removeprefix("htcgrid-"))


def profile_process(role: str, pid: int, path: Path, is_wall: bool) -> ProcessProfile:
    """Classify a process's samples; in the wall pass only those of its busy window."""
    threads = read_speedscope(path)
    result = ProcessProfile(role, pid)
    main = next((t for t in threads if '"MainThread"' in t.name), threads[0] if threads else None)
    if main is None:
        return result
    kind = role.split("-")[0]
    labels = {id(t): [classify(kind, s) for s in t.stacks] for t in threads}
    if kind == "client":
        busy = [i for i, s in enumerate(main.stacks) if any(f.short == TIMED_FUNCTION for f in s)]
    else:
        busy = [i for i, stage in enumerate(labels[id(main)]) if stage != "wait"]
    lo, hi = (busy[0], busy[-1] + 1) if busy else (0, 0)
    result.window_s = (hi - lo) * main.seconds_per_sample
    for t in threads:
        # a thread born after the samplers started (the W1 session's collector) is sampled
        # from its start, so its indices are not the main thread's: keep all of it
        is_aligned = len(t.stacks) == len(main.stacks)
        is_windowed = is_aligned and (is_wall or (kind == "client" and t is main))
        counts = result.by_thread.setdefault(thread_label(t.name), Counter())
        for i, (stack, stage) in enumerate(zip(t.stacks, labels[id(t)], strict=True)):
            if is_windowed and not lo <= i < hi:
                continue
            counts[stage] += 1
            leaf = next((f.name for f in reversed(stack) if "htcgrid" in f.file), None)
            fn = stack[-1].name if stack else "?"
            result.leaves[(stage, f"{fn} <- {leaf}" if leaf and leaf != fn else fn)] += 1
    return result


# -- the child: a grid, a warm-up, W1 twice ---------------------------------------------------
def w1(session_grid: htcgrid.Grid) -> float:
    """W1 as bench/run.py drives it: submit_many in batches of 2,000, every result checked in
    order; the seconds from the first submit to the last result."""
    values = inputs(W1_TASKS)
    with session_grid.session(name="bench") as session:
        start = time.perf_counter()
        futures = []
        for i in range(0, len(values), SUBMIT_BATCH):
            futures.extend(session.submit_many(noop, values[i : i + SUBMIT_BATCH]))
        for i, future in enumerate(futures):
            if future.result(timeout=CHILD_TIMEOUT_S) != values[i]:
                raise AssertionError(f"W1 task {i}: wrong result")
        return time.perf_counter() - start


def profiled_w1(session_grid: htcgrid.Grid) -> float:
    """The W1 the samplers watch (its name marks the client's busy window)."""
    return w1(session_grid)


def executor_pid(_: object) -> int:
    return os.getpid()


def warm_up(grid: htcgrid.Grid, executors: int) -> None:
    """Instant tasks until every executor process has run one (as bench/run.py does)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    with grid.session(name="bench-warm-up") as session:
        while len(seen) < executors and time.monotonic() < deadline:
            seen.update(f.result(timeout=60) for f in session.submit_many(executor_pid, range(4)))
            time.sleep(0.05)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if int(text.rpartition(")")[2].split()[1]) != pid:
                continue
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            found.append(int(stat.parent.name))
    return sorted(found)


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(path: Path, timeout_s: float = CHILD_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.002)


def run_child(home: Path, url: str | None) -> None:
    embedded = htcgrid.EmbeddedGrid(
        home=home, store_url=url, workers=2, concurrency=1, log_dir=home / "logs"
    ).start()
    grid = htcgrid.connect(embedded.url, start_workers=False)
    try:
        warm_up(grid, 2)
        reference = w1(grid)
        time.sleep(0.2)
        pids: dict[str, int] = {"client": os.getpid()}
        for n, worker in enumerate(embedded.pids):
            pids[f"agent-{n}"] = worker
            for m, ex in enumerate(children(worker)):
                pids[f"executor-{n}.{m}"] = ex
        (home / "pids.json").write_text(json.dumps(pids))
        wait_for(home / "go")
        before = {role: cpu_s(pid) for role, pid in pids.items()}
        seconds = profiled_w1(grid)
        after = {role: cpu_s(pid) for role, pid in pids.items()}
        done = {
            "seconds": seconds,
            "reference_seconds": reference,
            "cpu_s": {role: round(after[role] - before[role], 3) for role in pids},
        }
        (home / "done.json").write_text(json.dumps(done))
        wait_for(home / "stop", 60)
    finally:
        grid.close()
        embedded.stop()


# -- the parent: samplers around the child -----------------------------------------------------
def py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        sys.exit("py-spy is not installed: pip install py-spy (it is in the dev extra)")
    return found


def one_pass(
    args: argparse.Namespace, is_wall: bool, raw_dir: Path
) -> tuple[dict[str, Any], list[ProcessProfile]]:
    """Run the child on a fresh store with samplers attached; classify what they saw."""
    name = "wall" if is_wall else "cpu"
    home = Path(tempfile.mkdtemp(prefix="htcgrid-profile-"))
    store: Store | None = None if args.backend == "sqlite" else fresh_store(args.backend)
    cmd = [sys.executable, __file__, "--child", str(home)]
    cmd += ["--child-url", store.url] if store else []
    log = (raw_dir / f"{name}-child.log").open("w")
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    samplers: dict[str, tuple[int, subprocess.Popen[bytes], Path]] = {}
    try:
        wait_for(home / "pids.json")
        pids: dict[str, int] = json.loads((home / "pids.json").read_text())
        load = os.getloadavg()[0]
        for role, pid in pids.items():
            out = raw_dir / f"{name}-{role}-{pid}.speedscope.json"
            spy = [py_spy(), "record", "--pid", str(pid), "--rate", str(args.rate)]
            spy += ["--format", "speedscope", "--threads", "-o", str(out)]
            spy += ["--idle"] if is_wall else []
            spy += [] if args.blocking else ["--nonblocking"]
            spy_log = (raw_dir / f"{name}-{role}.py-spy.log").open("w")
            proc = subprocess.Popen(spy, stdout=spy_log, stderr=subprocess.STDOUT)
            samplers[role] = (pid, proc, out)
        time.sleep(LEAD_S)
        (home / "go").touch()
        wait_for(home / "done.json")
        for _, proc, _ in samplers.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for _, proc, _ in samplers.values():
            proc.wait(timeout=60)
        done: dict[str, Any] = json.loads((home / "done.json").read_text())
        done["load_avg_1m_before"] = round(load, 2)
        (home / "stop").touch()
        child.wait(timeout=120)
    finally:
        for _, proc, _ in samplers.values():
            if proc.poll() is None:
                proc.kill()
        if child.poll() is None:
            child.kill()
        log.close()
        if store is not None:
            delete_store(store)
        shutil.rmtree(home, ignore_errors=True)
    profiles = [
        profile_process(role.split("-")[0], pid, out, is_wall)
        for role, (pid, _, out) in samplers.items()
    ]
    for p, role in zip(profiles, samplers, strict=True):
        p.role = role
    return done, profiles


# -- the report ---------------------------------------------------------------------------
def report(
    args: argparse.Namespace,
    wall: tuple[dict[str, Any], list[ProcessProfile]],
    cpu: tuple[dict[str, Any], list[ProcessProfile]],
) -> str:
    """Markdown: the runs, then per process the wall share of each busy thread per stage, and
    the CPU per stage (the process's CPU time from /proc, split by its CPU-pass samples)."""
    (wall_done, wall_profiles), (cpu_done, cpu_profiles) = wall, cpu
    lines = [
        f"# W1 stage profile: {args.backend}, 2 worker x 1 executor, {W1_TASKS:,} no-op tasks",
        "",
        f"date {datetime.now(UTC).isoformat(timespec='seconds')}; {machine()}  ",
        f"command: `python bench/stages.py {' '.join(sys.argv[1:])}`  ",
        f"py-spy {args.rate} Hz, {'' if args.blocking else 'non'}blocking, one per process",
        "",
        "| pass | W1 unprofiled s | W1 profiled s | load 1m before | CPU s of the profiled W1 |",
        "|---|---:|---:|---:|---|",
    ]
    for name, done in (("wall", wall_done), ("cpu", cpu_done)):
        cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in done["cpu_s"].items())
        lines.append(
            f"| {name} | {done['reference_seconds']:.3f} | {done['seconds']:.3f} | "
            f"{done['load_avg_1m_before']} | {cpu_text} |"
        )
    lines += [
        "",
        "Wall %: share of a thread's samples in the process's busy window (threads that only",
        "waited are left out). CPU s: the process's CPU time in the CPU pass (/proc), split in",
        "proportion to its on-CPU-or-runnable samples per stage.",
    ]
    cpu_by_role = {p.role: p for p in cpu_profiles}
    for w in wall_profiles:
        c = cpu_by_role.get(w.role)
        busy = {
            name: counts
            for name, counts in w.by_thread.items()
            if counts and counts["wait"] < 0.98 * sum(counts.values())
        }
        idle = sorted(set(w.by_thread) - set(busy))
        active = c.samples if c else Counter()
        n_active = sum(active.values())
        cpu_s = float(cpu_done["cpu_s"].get(w.role, 0.0))
        head = " | ".join(f"wall % {name}" for name in busy)
        lines += [
            "",
            f"## {w.role}: busy window {w.window_s:.3f} s, CPU {cpu_s:.2f} s"
            + (f" (only waiting: {', '.join(idle)})" if idle else ""),
            "",
            f"| stage | {head} | CPU samples % | CPU s | CPU µs/task |",
            "|---|" + "---:|" * (len(busy) + 3),
        ]
        for stage in STAGES:
            shares = [100 * t[stage] / max(1, sum(t.values())) for t in busy.values()]
            if not active[stage] and not any(shares):
                continue
            share = active[stage] / max(1, n_active)
            stage_cpu = cpu_s * share
            cells = [*(f"{v:.1f}" for v in shares), f"{100 * share:.1f}", f"{stage_cpu:.3f}"]
            cells.append(f"{stage_cpu / W1_TASKS * 1e6:.1f}")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        if c:
            lines += [
                "",
                "Top CPU-pass samples by innermost frame (<- innermost project frame):",
                "",
            ]
            for (stage, fn), n in c.leaves.most_common(args.top):
                lines.append(f"- {100 * n / max(1, n_active):4.1f}% [{stage}] {fn}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS)
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument(
        "--blocking",
        action="store_true",
        help="pause each target for every sample (exact stacks; slows W1 more, and py-spy then "
        "counts some waiting threads as active, which spoils the CPU pass)",
    )
    parser.add_argument("--top", type=int, default=12, help="innermost frames listed per process")
    parser.add_argument("--keep", type=Path, help="directory for the raw py-spy files")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.child_url)
        return 0
    raw_dir = args.keep or Path(tempfile.mkdtemp(prefix="htcgrid-py-spy-"))
    raw_dir.mkdir(parents=True, exist_ok=True)
    print(f"raw py-spy files in {raw_dir}", file=sys.stderr)
    wall = one_pass(args, True, raw_dir)
    cpu = one_pass(args, False, raw_dir)
    text = report(args, wall, cpu)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
