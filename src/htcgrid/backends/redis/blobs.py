"""Blobs in Redis, next to their session: ``{prefix:session}:blob:<name>``."""

from __future__ import annotations

from collections.abc import Sequence

from htcgrid.backends.blobs import split_blob_key
from htcgrid.backends.redis.link import Link
from htcgrid.backends.redis.schema import StoreKeys
from htcgrid.backends.redis.scripts import DROP_BLOBS
from htcgrid.core.errors import NotFound
from htcgrid.core.ids import check_session_id


class RedisBlobStore:
    """Blobs as Redis strings, indexed per session so deleting a session removes them.

    Every operation is safe to repeat, so all of them are retried after connection errors.
    """

    def __init__(self, link: Link, keys: StoreKeys) -> None:
        self._link = link
        self._keys = keys

    def put(self, key: str, data: bytes) -> None:
        session_id, name = split_blob_key(key)
        k = self._keys.session(session_id)

        def put() -> None:
            pipe = self._link.client.pipeline(transaction=True)  # one slot: MULTI is fine
            pipe.set(k.blob_prefix + name, bytes(data))
            pipe.sadd(k.blobs, name)
            pipe.execute()

        self._link.safely(put)

    def get(self, key: str) -> bytes:
        session_id, name = split_blob_key(key)
        k = self._keys.session(session_id)
        data = self._link.safely(lambda: self._link.client.get(k.blob_prefix + name))
        if data is None:
            raise NotFound(f"no blob {key!r}")
        return data if isinstance(data, bytes) else data.encode()

    def discard(self, keys: Sequence[str]) -> None:
        """Delete blobs and their index entries, one MULTI per session (one slot each)."""
        by_session: dict[str, list[str]] = {}
        for key in keys:
            session_id, name = split_blob_key(key)
            by_session.setdefault(session_id, []).append(name)
        if not by_session:
            return

        def discard() -> None:
            for session_id, names in by_session.items():
                k = self._keys.session(session_id)
                pipe = self._link.client.pipeline(transaction=True)
                pipe.unlink(*(k.blob_prefix + name for name in names))
                pipe.srem(k.blobs, *names)
                pipe.execute()

        self._link.safely(discard)

    def delete_session(self, session_id: str) -> None:
        k = self._keys.session(check_session_id(session_id))
        self._link.safely(lambda: self._link.call(DROP_BLOBS, [k.blobs], [k.blob_prefix]))
