"""PostgreSQL only: a store made by an older schema version is brought up to date when the
current code opens it, and what it held keeps working."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from htcgrid.backends.base import Backend
from htcgrid.backends.postgres import PostgresBackend, schema
from htcgrid.core.model import NewTask, SessionSpec
from htcgrid.core.retry import decide_success
from tests.stores.postgres import open_postgres_store, server_url

from .helpers import HANDLER, TTL


def _version(store: Backend) -> int:
    name = parse_qs(urlsplit(store.url).query)["schema"][0]
    with psycopg.connect(server_url(), autocommit=True) as conn:
        return schema.current_version(conn, f'"{name}"')


def test_a_version_2_store_is_migrated_and_its_sessions_keep_working_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as old:  # the code of version 2 makes the store
        old.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
        old.setattr(schema, "SCHEMA_VERSION", 2)
        before = open_postgres_store(tmp_path)
        before.create_session("s", SessionSpec(timeout_s=7.0), time.time())
        url = before.url
        before.close()
    assert _version(before) == 2

    store = PostgresBackend.from_url(url)  # the current code opens it
    try:
        assert _version(store) == schema.SCHEMA_VERSION == 3
        tasks = [NewTask(handler=HANDLER), NewTask(handler=HANDLER, timeout_s=1.5)]
        ids = store.submit("s", tasks, time.time())
        claims = store.claim("w", 10, TTL, time.time())
        assert {c.task_id: c.timeout_s for c in claims} == {ids[0]: 7.0, ids[1]: 1.5}
        done = [decide_success(c.lease, b"r", None) for c in claims]
        assert store.complete(done, time.time()) == [True, True]
        assert store.counts("s").succeeded == 2
    finally:
        store.close()
