"""Fresh PostgreSQL stores for the tests: one new schema per store in the ``test`` database.

The server is ``$HTCGRID_TEST_POSTGRES`` or ``postgresql://postgres@127.0.0.1:5432/test``.
A store's URL carries its schema, so another process opens the same store from it. Schemas
cannot be dropped when a store closes (the durability tests close a store and reopen it), so
the schemas this process created are dropped when it exits, and schemas that an interrupted
run left behind are dropped once they are a day old.
"""

from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from htcgrid.backends.base import Backend
from htcgrid.backends.postgres import PostgresBackend
from tests.stores import missing_service

SERVER_ENV = "HTCGRID_TEST_POSTGRES"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
PREFIX = "t_"
STALE_AFTER = "1 day"

_created: list[str] = []
_checked: dict[str, str | None] = {}  # server URL -> why it is unusable, None if usable


def server_url() -> str:
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def open_postgres_store(tmp_path: Path) -> Backend:
    """A fresh, empty store in its own schema; skips (or fails under CI) without a server."""
    del tmp_path  # everything lives in the server
    server = server_url()
    why = _check(server)
    if why is not None:
        missing_service("postgres", why)
    schema = f"{PREFIX}{uuid.uuid4().hex}"
    _created.append(schema)
    separator = "&" if "?" in server else "?"
    return PostgresBackend.from_url(f"{server}{separator}schema={schema}")


def _check(server: str) -> str | None:
    """Why ``server`` cannot serve tests (None when it can); the first call also registers
    the clean-up and drops stale schemas."""
    if server not in _checked:
        try:
            with psycopg.connect(server, connect_timeout=3, autocommit=True) as conn:
                _drop_stale(conn)
            _checked[server] = None
            atexit.register(_drop_created, server)
        except psycopg.Error as exc:
            _checked[server] = f"{server}: {exc}".strip()
    return _checked[server]


def _drop_stale(conn: psycopg.Connection[TupleRow]) -> None:
    """Drop test schemas whose store was created more than a day ago."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [PREFIX + "%"]
    ).fetchall()
    for (schema,) in rows:
        created = conn.execute("SELECT to_regclass(%s)", [f'"{schema}".schema_version']).fetchone()
        if created is None or created[0] is None:
            continue  # being created right now, or not ours
        is_stale = conn.execute(
            f'SELECT min(applied_at) < now() - %s::interval FROM "{schema}".schema_version',
            [STALE_AFTER],
        ).fetchone()
        if is_stale is not None and is_stale[0]:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _drop_created(server: str) -> None:
    """Drop the schemas of every store this process created (at exit)."""
    if not _created:
        return
    try:
        with psycopg.connect(server, connect_timeout=3, autocommit=True) as conn:
            for schema in _created:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error:
        pass  # a later run drops them once they are stale
    _created.clear()
