"""PostgreSQL only: claim, complete and expire cost one statement each (a claim's is
wrapped in BEGIN and COMMIT, see ``PostgresBackend.claim``).

The claim plans the split between sessions inside the server (the ``claim_tasks``
function), so these tests also check that plan against :func:`htcgrid.core.fairshare.
plan_claim`, the one definition of fair share, and that a connection the server closed while
idle is replaced before a one-statement write is sent on it.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from htcgrid.backends.base import Backend
from htcgrid.core.fairshare import Candidate, plan_claim
from htcgrid.core.model import ErrorInfo, FailureKind, SessionSpec
from htcgrid.core.retry import decide_failure, decide_success, lost_error
from tests.stores.postgres import open_postgres_store, server_url

from .helpers import T0, TTL, new_tasks, open_session


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Backend]:
    store = open_postgres_store(tmp_path)
    yield store
    store.close()


def _schema(store: Backend) -> str:
    return parse_qs(urlsplit(store.url).query)["schema"][0]


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The statements sent from now on (each one round trip), as they are sent."""
    sent: list[object] = []
    execute = psycopg.Connection.execute

    def recorded(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", recorded)
    return sent


def _counting(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the statements sent from now on (each one round trip)."""
    sent = _recording(monkeypatch)

    def taken() -> int:
        n = len(sent)
        sent.clear()
        return n

    return taken


def test_claim_complete_and_expire_send_one_statement_each_postgres(
    postgres: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_session(postgres, "a", n=20, max_attempts=3)
    open_session(postgres, "b", n=20, max_attempts=3)
    postgres.counts("a")  # the connection is open and the schema migrated
    statements = _counting(monkeypatch)
    claims = postgres.claim("w", 6, TTL, T0 + 1)
    assert statements() == 3  # BEGIN, the claim, COMMIT: uncommitted if its answer is late
    assert Counter(c.session_id for c in claims) == {"a": 3, "b": 3}
    error = ErrorInfo(kind=FailureKind.ERROR, type="E", message="m")
    done = [decide_success(c.lease, b"r", None) for c in claims[:4]]
    done.append(decide_failure(claims[4].lease, error, T0 + 2))
    assert postgres.complete(done, T0 + 2) == [True] * 5
    assert statements() == 1
    lost = decide_failure(claims[5].lease, lost_error(claims[5].lease), T0 + TTL + 2)
    assert postgres.expire([lost], T0 + TTL + 2) == [True]
    assert statements() == 1
    assert postgres.complete(done[:1], T0 + 3) == [False]  # already ended
    assert statements() == 1


def test_a_claim_that_takes_nothing_is_rolled_back_postgres(
    postgres: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It locked the session it planned; a COMMIT would wait for a WAL flush holding that
    lock, and with it the completion of the claim that took the tasks (``_NothingTaken``)."""
    open_session(postgres, "s", n=1, max_attempts=3, retry_backoff_s=10.0)
    [c] = postgres.claim("w", 1, TTL, T0)
    error = ErrorInfo(kind=FailureKind.ERROR, type="E", message="m")
    assert postgres.complete([decide_failure(c.lease, error, T0 + 1)], T0 + 1) == [True]
    sent = _recording(monkeypatch)
    assert postgres.claim("w", 10, TTL, T0 + 5) == []  # planned (pending), but not due
    assert [sent[0], sent[-1]] == [b"BEGIN", b"ROLLBACK"] and len(sent) == 3
    monkeypatch.undo()
    [again] = postgres.claim("w", 10, TTL, T0 + 11)  # nothing was lost by the rollback
    assert (again.task_id, again.attempt) == (c.task_id, 2)


def test_a_wait_for_work_looks_for_work_in_one_statement_postgres(
    postgres: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimable now, or when the next delayed retry is due: one question, one round trip."""
    open_session(postgres, "s", n=1, max_attempts=3, retry_backoff_s=60.0)
    now = time.time()  # the wait reads the clock: a delayed retry must be due after it
    [c] = postgres.claim("w", 1, TTL, now)
    error = ErrorInfo(kind=FailureKind.ERROR, type="E", message="m")
    assert postgres.complete([decide_failure(c.lease, error, now)], now) == [True]
    postgres.wait_for_work(0.01)  # its connection LISTENs from now on
    statements = _counting(monkeypatch)
    started = time.monotonic()
    postgres.wait_for_work(0.2)  # the retry is not due for 60 s: it sleeps out its timeout
    assert time.monotonic() - started >= 0.2
    assert statements() == 1


def test_submit_sends_one_statement_postgres(
    postgres: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_session(postgres, "s")
    statements = _counting(monkeypatch)
    ids = postgres.submit("s", new_tasks(3), T0, batch_key="k")
    assert statements() == 1  # no BEGIN, no COMMIT: submit_tasks is its own transaction
    assert postgres.submit("s", new_tasks(3), T0, batch_key="k") == ids  # the key answers
    assert statements() == 1 and postgres.counts("s").pending == 3


def test_a_batch_with_repeats_and_strangers_is_answered_in_order_postgres(
    postgres: Backend,
) -> None:
    ids = open_session(postgres, "s", n=3)
    claims = postgres.claim("w", 3, TTL, T0 + 1)
    first = decide_success(claims[0].lease, b"1", None)
    again = decide_success(claims[0].lease, b"2", None)  # the same attempt twice: first wins
    stranger = first.__class__(**{**_fields(first), "worker_id": "other"})
    unknown = first.__class__(**{**_fields(first), "task_id": "nosuch.0"})
    second = decide_success(claims[1].lease, b"3", None)
    answer = postgres.complete([stranger, first, unknown, again, second], T0 + 2)
    assert answer == [False, True, False, False, True]
    records = postgres.tasks(ids[:2])
    assert [r.result for r in records] == [b"1", b"3"]
    assert [r.done_seq for r in records] == [1, 2]


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__struct_fields__}


@pytest.mark.parametrize("seed", range(8))
def test_the_claim_plan_in_the_server_is_plan_claim_postgres(postgres: Backend, seed: int) -> None:
    rng = random.Random(seed)
    n_sessions = rng.randint(1, 7)
    for i in range(n_sessions):
        spec = SessionSpec(priority=rng.choice([0, 0, 1, 2]))
        postgres.create_session(f"s{i}", spec, T0)
        postgres.submit(f"s{i}", new_tasks(rng.randint(1, 12)), T0)
    served = {f"s{i}": float(rng.choice([0, 1, 2])) for i in range(n_sessions)}
    with psycopg.connect(server_url(), autocommit=True) as conn:  # ties on last_served too
        for session_id, when in served.items():
            conn.execute(
                f'UPDATE "{_schema(postgres)}".sessions SET last_served = %s WHERE session_id = %s',
                [when, session_id],
            )
    for turn in range(6):
        infos = [postgres.get_session(f"s{i}") for i in range(n_sessions)]
        candidates = [
            Candidate(i.session_id, i.spec.priority, i.counts.pending, served[i.session_id])
            for i in infos
            if i.counts.pending > 0
        ]
        wanted = rng.randint(1, 15)
        plan = plan_claim(candidates, wanted)
        now = T0 + 10 + turn
        claims = postgres.claim("w", wanted, TTL, now)
        taken: list[tuple[str, int]] = []
        for c in claims:
            if taken and taken[-1][0] == c.session_id:
                taken[-1] = (c.session_id, taken[-1][1] + 1)
            else:
                taken.append((c.session_id, 1))
        assert taken == plan
        for session_id, _ in plan:
            served[session_id] = now


def test_a_connection_the_server_closed_while_idle_is_replaced_postgres(
    postgres: Backend,
) -> None:
    open_session(postgres, "s", n=5)
    claims = postgres.claim("w", 3, TTL, T0 + 1)
    assert postgres.complete([decide_success(claims[0].lease, b"r", None)], T0 + 2) == [True]
    claims = claims[1:]
    with psycopg.connect(server_url(), autocommit=True) as conn:
        ended = conn.execute(  # waits until the server process has exited
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = 'htcgrid' AND pid <> pg_backend_pid() "
            "AND datname = current_database() AND state = 'idle' "
            "AND query LIKE %s",
            [f'%"{_schema(postgres)}".end_attempts%'],
        ).fetchall()
    assert ended == [(True,)]
    # a single statement that cannot be replayed once sent: it must go out on a new
    # connection, not fail on the dead one
    done = [decide_success(c.lease, b"r", None) for c in claims]
    assert postgres.complete(done, T0 + 2) == [True, True]
    assert len(postgres.claim("w", 2, TTL, T0 + 3)) == 2
