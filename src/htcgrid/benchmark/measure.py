"""What a benchmark measures besides wall time: memory and CPU of the client, of the grid's
processes and of the store servers on this machine, and a description of the machine.

Everything is read from ``/proc`` (Linux): the numbers must cover processes the client did
not start itself (store servers) and processes that restart under it (killed workers), which
``resource.getrusage`` cannot see.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Process names of the store servers whose CPU time and memory a run includes.
STORE_PROCESSES = frozenset({"redis-server", "postgres"})
#: Most points kept in a memory timeline (older points are thinned, never the last one).
TIMELINE_POINTS = 40


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


def _status_mb(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MB, or None if it is gone."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float | None:
    """The process's resident set now (VmRSS), in MB, or None if it is gone."""
    return _status_mb(pid, "VmRSS:")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def grid_roles(worker_pids: list[int]) -> dict[str, list[int]]:
    """The processes of local workers by role: ``workers`` (agents), ``executors`` (below
    them) and ``helpers`` (multiprocessing's resource tracker, not user code)."""
    roles: dict[str, list[int]] = {"workers": [], "executors": [], "helpers": []}
    for pid, depth in sorted(descendants(worker_pids).items()):
        if depth == 0:
            roles["workers"].append(pid)
        elif "resource_tracker" in command_line(pid):
            roles["helpers"].append(pid)
        else:
            roles["executors"].append(pid)
    return roles


def memory_report(worker_pids: list[int]) -> dict[str, Any]:
    """Peak RSS of the client (which also runs an embedded grid's reaper), of each worker
    (agent) process and of each process below them (executors)."""
    client = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report: dict[str, Any] = {"client": round(client, 1), "workers": [], "executors": []}
    for role, pids in grid_roles(worker_pids).items():
        peaks = [mb for mb in map(peak_rss_mb, pids) if mb is not None]
        if peaks or role != "helpers":
            report[role] = [round(mb, 1) for mb in peaks]
    return report


def store_pids(port: int | None = None) -> dict[str, list[int]]:
    """Store server processes on this machine by name. With ``port``, only redis-servers
    listening on it (their command line names it); PostgreSQL's processes cannot be told
    apart by port, so every one counts."""
    found: dict[str, list[int]] = {name: [] for name in sorted(STORE_PROCESSES)}
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name not in found:
            continue
        pid = int(comm.parent.name)
        if name == "redis-server" and port is not None and f":{port}" not in command_line(pid):
            continue
        found[name].append(pid)
    return found


def process_cpu_s(pid: int, tick: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / tick


def cpu_seconds(roots: list[int]) -> dict[str, float]:
    """CPU seconds used so far by the client, by the grid processes under ``roots`` (also
    split into the agents, ``roots`` themselves, and the executors below them), by the
    store servers on this machine (every redis-server and postgres process: only the
    benchmark should be using them) and by the whole machine; a run where the machine used
    much more than the first three ran beside something else (``foreign`` in the
    record, see :func:`cpu_delta`)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_depth = [0.0, 0.0]  # agents (the roots), and every process below them
    for pid, depth in descendants(roots).items():
        by_depth[min(depth, 1)] += process_cpu_s(pid, tick)
    by_name = {
        name: sum(process_cpu_s(pid, tick) for pid in pids) for name, pids in store_pids().items()
    }
    times = os.times()
    client = times.user + times.system + times.children_user + times.children_system
    # /proc/stat cpu: user nice system idle iowait irq softirq steal ...
    ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    machine_s = (sum(ticks) - ticks[3] - ticks[4]) / tick
    return {
        "client": client,
        "grid": sum(by_depth),
        "grid_agents": by_depth[0],
        "grid_executors": by_depth[1],
        "store": sum(by_name.values()),
        **{f"store_{name}": cpu for name, cpu in by_name.items()},
        "machine": machine_s,
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two :func:`cpu_seconds` readings, plus ``foreign``: what
    the machine spent outside the client, the grid and the store."""
    cpu = {k: round(after[k] - before[k], 2) for k in before}
    own = cpu["client"] + cpu["grid"] + cpu["store"]
    cpu["foreign"] = round(max(0.0, cpu["machine"] - own), 2)
    return cpu


def machine() -> str:
    """One line naming the OS, CPU, core count, memory and Python of this machine."""
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


def append_line(out: Path | None, line: str) -> None:
    """Append one JSON ``line`` to the results file ``out`` (made, with its directory, on
    first use); nothing when ``out`` is None. Every benchmark script keeps its lines so."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(line + "\n")


class RssSampler:
    """Samples the resident memory (VmRSS) of the client, the local grid processes and the
    store servers every ``period_s`` on a daemon thread.

    Peak RSS alone cannot tell a process that grew steadily with the task count from one
    that spiked once; the sampled first, largest and last values (and a thinned timeline
    with the number of tasks done at each point) can. Worker processes are looked up anew
    at every sample, so restarted workers are followed.
    """

    ROLES = ("client", "workers", "executors", "store")

    def __init__(
        self,
        worker_pids: Callable[[], list[int]],
        *,
        done: Callable[[], int],
        store_port: int | None = None,
        with_store: bool = False,
        period_s: float = 1.0,
    ) -> None:
        self._worker_pids = worker_pids
        self._done = done
        self._store_port = store_port
        self._with_store = with_store
        self.period_s = period_s
        self._points: list[tuple[float, int, dict[str, float]]] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcgrid-rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self.sample()  # the first point is the state before the run
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()  # the last point is the state at the end of the run

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def sample(self) -> None:
        """Take one point now: MB per role (workers and executors summed over processes,
        the store summed over its server processes)."""
        roles = grid_roles(self._worker_pids())
        mb: dict[str, float] = {"client": rss_mb(os.getpid()) or 0.0}
        for role in ("workers", "executors"):
            mb[role] = sum(m for m in map(rss_mb, roles[role]) if m is not None)
        if self._with_store:
            pids = [p for ps in store_pids(self._store_port).values() for p in ps]
            mb["store"] = sum(m for m in map(rss_mb, pids) if m is not None)
        self._points.append((time.monotonic() - self._started, self._done(), mb))

    def summary(self) -> dict[str, Any]:
        """``first``, ``max`` and ``last`` sampled MB per role, and a ``timeline`` of at most
        :data:`TIMELINE_POINTS` rows ``[seconds, tasks done, MB per role...]``."""
        if not self._points:
            return {}
        roles = [r for r in self.ROLES if r in self._points[-1][2]]
        out: dict[str, Any] = {
            "period_s": self.period_s,
            "samples": len(self._points),
            "summed": "workers, executors and store: the total over their processes",
        }
        for role in roles:
            values = [p[2].get(role, 0.0) for p in self._points]
            out[role] = {
                "first": round(values[0], 1),
                "max": round(max(values), 1),
                "last": round(values[-1], 1),
            }
        step = max(1, -(-len(self._points) // TIMELINE_POINTS))
        picked = self._points[::step]
        if picked[-1] is not self._points[-1]:
            picked.append(self._points[-1])
        out["timeline_columns"] = ["seconds", "done", *roles]
        out["timeline"] = [
            [round(t, 1), done, *(round(mb.get(r, 0.0), 1) for r in roles)]
            for t, done, mb in picked
        ]
        return out
