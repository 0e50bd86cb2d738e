"""Large payloads and results in the store's own ``blobs`` table, so a PostgreSQL grid needs
no shared filesystem: every machine that reaches the database reaches its blobs."""

from __future__ import annotations

from collections.abc import Sequence

from htcgrid.backends.blobs import split_blob_key
from htcgrid.core.errors import NotFound
from htcgrid.core.ids import check_session_id

from .connections import Conn, Connections
from .queries import Sql


class PostgresBlobStore:
    """:class:`htcgrid.backends.blobs.BlobStore` on a ``bytea`` table (up to 1 GB a blob)."""

    def __init__(self, db: Connections, sql: Sql) -> None:
        self._db = db
        self._sql = sql

    def put(self, key: str, data: bytes) -> None:
        session_id, _ = split_blob_key(key)

        def put(conn: Conn) -> None:
            conn.execute(self._sql.blob_put, [key, session_id, bytes(data)])

        self._db.statement(put, is_idempotent=True)

    def get(self, key: str) -> bytes:
        split_blob_key(key)

        def get(conn: Conn) -> bytes | None:
            row = conn.execute(self._sql.blob_get, [key], binary=True).fetchone()
            return None if row is None else bytes(row[0])

        data = self._db.read(get)
        if data is None:
            raise NotFound(f"no blob {key!r}")
        return data

    def discard(self, keys: Sequence[str]) -> None:
        for key in keys:
            split_blob_key(key)
        if not keys:
            return

        def discard(conn: Conn) -> None:
            conn.execute(self._sql.blob_discard, [list(keys)])

        self._db.statement(discard, is_idempotent=True)

    def delete_session(self, session_id: str) -> None:
        check_session_id(session_id)

        def delete(conn: Conn) -> None:
            conn.execute(self._sql.blob_delete_session, [session_id])

        self._db.statement(delete, is_idempotent=True)
