"""Drills: worker hosts cut off the network, on a shared store (Redis, PostgreSQL).

Each host is a network namespace running a real worker process against the store, which
listens on this host's loopback and is reached through a :class:`Forwarder`. Pulling a
host's cable must get its attempts retried elsewhere within one lease TTL plus one reaper
period, its late results must be refused, its store calls must fail instead of hanging, and
once the cable is back it must serve again. Every task ends SUCCEEDED with one accepted
result.
"""

from __future__ import annotations

import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import htcgrid
from htcgrid.backends.base import Backend
from htcgrid.backends.registry import open_backend
from htcgrid.core.states import TaskState
from htcgrid.reaper import Reaper
from tests.drills import handlers
from tests.drills.conftest import (
    HOST_ENV,
    RECORD_ENV,
    Proc,
    Processes,
    drill_env,
    wait_until,
    worker_stats,
)
from tests.drills.network import Forwarder, Host
from tests.stores import open_store

pytestmark = pytest.mark.drill

LEASE_TTL_S = 2.0
REAPER_PERIOD_S = 0.2
#: Scheduling noise allowed on top of the lease TTL and the reaper period (2 busy cores).
SLACK_S = 1.5
#: A cut-off worker's store calls may block while the network is down, but must fail
#: within this, not hang until TCP gives up (about 15 minutes with Linux defaults).
STORE_CALL_BOUND_S = 45.0
MAX_TASK_S = 1.0
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432}

Hosts = Callable[[int], list[Host]]


@pytest.fixture(params=["redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend = open_store(request.param, tmp_path)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def network(
    store: Backend, make_hosts: Hosts, tmp_path: Path
) -> Iterator[Callable[[int], tuple[list[Host], Forwarder]]]:
    """``network(n)``: n hosts and a Forwarder from their gateways to the store. Declared
    before ``procs`` in the tests, so processes are stopped before the network goes."""
    made: list[Forwarder] = []

    def make(n: int) -> tuple[list[Host], Forwarder]:
        hosts = make_hosts(n)
        made.append(Forwarder([h.gateway for h in hosts], store_address(store.url)))
        return hosts, made[-1]

    try:
        yield make
    finally:
        for f in made:
            f.close()


@pytest.fixture
def reaper(store: Backend) -> Iterator[Reaper]:
    backend = open_backend(store.url)
    r = Reaper(backend, REAPER_PERIOD_S).start()
    try:
        yield r
    finally:
        r.stop()
        backend.close()


def store_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[parts.scheme]


def routed_url(url: str, address: str, port: int) -> str:
    """``url`` with its host and port replaced (user, database and options kept)."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}{address}:{port}"))


def start_worker(
    procs: Processes, store: Backend, host: Host, forwarder: Forwarder, name: str
) -> Proc:
    """A worker process inside ``host``, named ``<name>-<random>`` (its worker id too)."""
    worker_id = f"{name}-{secrets.token_hex(2)}"
    url = routed_url(store.url, host.gateway, forwarder.port)
    argv = [sys.executable, "-m", "htcgrid.worker", "--store", url, "--worker-id", worker_id]
    argv += ["--lease-ttl", str(LEASE_TTL_S), "--log-level", "DEBUG", "--concurrency", "2"]
    argv += ["--drain-timeout", "20"]
    env = drill_env(**{RECORD_ENV: str(procs.log_dir / f"{worker_id}.record"), HOST_ENV: worker_id})
    proc = procs.start(worker_id, host.command(argv), env)
    wait_until(lambda: " serving " in proc.log(), 30, f"{worker_id} to start\n{proc.log()}")
    return proc


def running_on(store: Backend, worker_id: str) -> list[str]:
    """Tasks running under a lease of ``worker_id``."""
    return [
        x.task_id for x in store.expired(time.time() + 3600, 10_000) if x.worker_id == worker_id
    ]


def log_records(log: str) -> list[str]:
    """A log split into records (a record's message may span lines)."""
    return re.split(r"\n(?=\d{4}-\d\d-\d\d )", log)


def recorded(path: Path) -> list[tuple[str, str, float]]:
    """(event, key, wall time) lines a worker's handlers wrote."""
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines() if line)
    return [(event, key, float(t)) for event, key, t in rows]


def test_a_host_cut_off_mid_task_loses_nothing_and_its_late_results_are_refused(
    store: Backend,
    network: Callable[[int], tuple[list[Host], Forwarder]],
    procs: Processes,
    reaper: Reaper,
) -> None:
    (victim_host, survivor_host), forwarder = network(2)
    victim = start_worker(procs, store, victim_host, forwarder, "victim")
    survivor = start_worker(procs, store, survivor_host, forwarder, "survivor")
    with htcgrid.connect(store.url, start_workers=False) as grid:
        session = grid.session(max_attempts=3)
        rng = random.Random(7)
        first = [(f"a{i}", round(rng.uniform(0.5, MAX_TASK_S), 3)) for i in range(16)]
        futures = session.submit_many(handlers.nap, first)

        # -- cut the victim while it runs attempts ----------------------------------------
        wait_until(
            lambda: len(running_on(store, victim.name)) >= 2, 30, "two attempts on the victim"
        )
        held = running_on(store, victim.name)
        victim_host.cut()
        cut_wall, cut_at = time.time(), time.monotonic()

        def is_detected() -> bool:  # reaped, or finished by the victim just before the cut
            return all(r.n_lost or r.state is TaskState.SUCCEEDED for r in store.tasks(held))

        detected_s = wait_until(is_detected, 30, f"the victim's attempts {held} to be reaped")
        reaped = [r.task_id for r in store.tasks(held) if r.n_lost]
        assert reaped, f"the victim finished {held} before the cut took effect"
        bound = LEASE_TTL_S + REAPER_PERIOD_S + SLACK_S
        assert detected_s <= bound, f"reaped {detected_s:.2f} s after the cut (bound {bound:g})"

        def are_done() -> bool:
            return all(r.state is TaskState.SUCCEEDED for r in store.tasks(reaped))

        retried_s = detected_s + wait_until(are_done, 30, f"{reaped} to succeed elsewhere")
        bound += 2 * MAX_TASK_S  # the survivor's next free executor, then the task itself
        assert retried_s <= bound, f"retried tasks done {retried_s:.2f} s after the cut ({bound:g})"
        assert {r.value[1] for r in session.get(reaped) if r} == {survivor.name}

        wait_until(lambda: session.counts().finished == len(first), 60, "the first tasks")
        assert survivor.stop() == 0, survivor.log()[-3000:]
        second = [(f"b{i}", 0.2) for i in range(8)]
        futures += session.submit_many(handlers.nap, second)  # for the victim alone

        # -- the cable is back: the victim serves again -----------------------------------
        victim_host.restore()
        restored_at = time.monotonic()
        total = len(first) + len(second)
        wait_until(
            lambda: session.counts().finished == total, 60, f"the last tasks\n{victim.log()}"
        )
        resumed_s = time.monotonic() - restored_at
        assert victim.stop() == 0, victim.log()[-3000:]

        # -- every task succeeded exactly once --------------------------------------------
        values = [f.result(timeout=30) for f in futures]
        assert [v[0] for v in values] == [key for key, _ in first + second]
        counts = session.counts()
        assert (counts.succeeded, counts.total) == (total, total), counts
        ids = [f.task_id for f in futures]
        final = store.tasks(ids)
    assert all(r.state is TaskState.SUCCEEDED for r in final)
    assert all(r.n_errors == r.n_timeouts == 0 and r.attempt == 1 + r.n_lost for r in final)
    lost = {r.task_id: r.n_lost for r in final if r.n_lost}
    assert set(reaped) <= set(lost), lost
    assert all(n == 1 for n in lost.values()), f"attempts lost more than once: {lost}"
    late_lost = [tid for tid in ids[len(first) :] if tid in lost]
    assert not late_lost, (
        f"{late_lost} were submitted while the victim was cut off, yet lost an attempt: a "
        "claim that reached the store after the cable came back got an expired lease"
    )
    assert {v[1] for v in values[len(first) :]} == {victim.name}, "the victim did not resume"

    # -- the victim's late results were refused, and counted -------------------------------
    reaped_keys = {key for (key, _), tid in zip(first, ids, strict=False) if tid in reaped}
    victim_runs = recorded(procs.log_dir / f"{victim.name}.record")
    late = {k for e, k, t in victim_runs if e == "end" and k in reaped_keys and t > cut_wall}
    assert late, f"no reaped attempt of the victim ran to its end while cut off: {victim_runs}"
    survivor_runs = recorded(procs.log_dir / f"{survivor.name}.record")
    ran_twice = {k for e, k, _ in victim_runs if e == "start"} & {
        k for e, k, _ in survivor_runs if e == "start"
    }
    assert late <= ran_twice
    stats = {**worker_stats(victim.log()), **worker_stats(survivor.log())}
    v, s = stats[victim.name], stats[survivor.name]
    # each late result was refused at completion, or dropped when a renewal said "lost"
    assert len(late) <= v["rejected"] + v["lost"] <= sum(lost.values()), (v, late, lost)
    if v["rejected"]:
        assert "late completion(s)" in victim.log()
    assert s["rejected"] == s["lost"] == 0, s
    accepted = v["succeeded"] + s["succeeded"]
    assert accepted <= total <= accepted + v["rejected"], stats
    print(
        f"\n[drill cut {store.url.split(':')[0]}] held at cut {len(held)}, reaped "
        f"{len(reaped)} after {detected_s:.2f} s, retried and done after {retried_s:.2f} s; "
        f"cut for {restored_at - cut_at:.1f} s; victim served again within {resumed_s:.2f} s "
        f"of the restore; victim {v}; ran twice {sorted(ran_twice)}"
    )


def test_a_cut_off_worker_fails_its_store_calls_and_serves_again_once_back(
    store: Backend,
    network: Callable[[int], tuple[list[Host], Forwarder]],
    procs: Processes,
    reaper: Reaper,
) -> None:
    [host], forwarder = network(1)
    worker = start_worker(procs, store, host, forwarder, "cut")
    with htcgrid.connect(store.url, start_workers=False) as grid:
        session = grid.session(max_attempts=3)
        [held] = session.submit_many(handlers.nap, [("held", 2.0)])
        wait_until(lambda: bool(running_on(store, worker.name)), 30, "the worker to run it")
        host.cut()
        cut_at = time.monotonic()
        fresh = session.submit_many(handlers.nap, [(f"fresh{i}", 0.1) for i in range(4)])

        # both the agent (completions, claims) and the heartbeat (renewals) call the store
        seen: dict[str, float] = {}

        def have_failed() -> bool:
            for record in log_records(worker.log()):
                if f"worker {worker.name}: heartbeat failed" in record:
                    seen.setdefault("heartbeat", time.monotonic() - cut_at)
                elif "htcgrid.worker.agent" in record and "; retrying" in record:
                    seen.setdefault("agent", time.monotonic() - cut_at)
            return len(seen) == 2

        while not have_failed():
            if time.monotonic() > cut_at + STORE_CALL_BOUND_S:
                missing = " and ".join(sorted({"agent", "heartbeat"} - set(seen)))
                pytest.fail(
                    f"the {missing} of a worker cut off the network did not see a store call "
                    f"fail within {STORE_CALL_BOUND_S:g} s: a call on a dead link blocks (no "
                    f"socket timeout or TCP keepalive?)\n{worker.log()[-3000:]}\n"
                    f"{worker.stacks()}"
                )
            time.sleep(0.2)
        # After its failed call the agent tries again at once (a claim: tasks are pending).
        # Bring the cable back once that call has been retrying for longer than a lease
        # TTL: what it applies when it gets through must be fresh, not born expired.
        time.sleep(max(0.0, cut_at + seen["agent"] + 0.5 + LEASE_TTL_S + 1 - time.monotonic()))
        host.restore()
        restored_at = time.monotonic()
        values = [f.result(timeout=30) for f in [held, *fresh]]
        resumed_s = time.monotonic() - restored_at
        assert values == [("held", worker.name)] + [(f"fresh{i}", worker.name) for i in range(4)]
        records = store.tasks([f.task_id for f in [held, *fresh]])
    assert worker.stop() == 0, worker.log()[-3000:]
    n_lost = [r.n_lost for r in records]
    assert n_lost == [1, 0, 0, 0, 0], (
        f"lost attempts {n_lost} (held, fresh...): only the attempt held across the cut may "
        "be lost. More means a claim that got through after the restore was applied with the "
        "time of its first try, so its lease was born expired and the reaper took it"
    )
    stats = worker_stats(worker.log())[worker.name]
    assert stats["rejected"] + stats["lost"] == 1, stats  # the held attempt's late result
    print(
        f"\n[drill cut-off calls {store.url.split(':')[0]}] agent's store call failed "
        f"{seen['agent']:.1f} s after the cut, heartbeat's {seen['heartbeat']:.1f} s; cut for "
        f"{restored_at - cut_at:.1f} s; all done {resumed_s:.2f} s after the restore; {stats}"
    )
