"""Blob stores: where payloads and results too large to keep inline in the state store live.

Keys are ``<session_id>/<name>`` so deleting a session removes its blobs with one prefix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

from htcgrid.core.errors import InvalidInput, NotFound
from htcgrid.core.ids import check_session_id, split_task_id

#: Payloads and results above this many bytes go to the blob store (configurable per grid).
DEFAULT_INLINE_LIMIT = 64 * 1024


def blob_key(session_id: str, name: str) -> str:
    """The key of blob ``name`` in ``session_id``."""
    if "/" in name or "\0" in name or name in {"", ".", ".."}:
        raise InvalidInput(f"malformed blob name {name!r}")
    return f"{check_session_id(session_id)}/{name}"


def new_blob_key(session_id: str, kind: str) -> str:
    """A fresh unique key for a blob of ``kind`` (input, output, handler) in ``session_id``."""
    return blob_key(session_id, f"{kind}-{uuid.uuid4().hex}")


def output_blob_key(task_id: str, attempt: int) -> str:
    """The key of the result blob of ``attempt`` of ``task_id``.

    One name per attempt, known before the attempt writes it: whoever ends an attempt
    without its result (the agent when its executor died, the reaper when its worker did)
    can delete what the attempt may have written, without having been told the key."""
    session_id, index = split_task_id(task_id)
    return blob_key(session_id, f"output-{index}-{attempt}")


def is_task_input(key: str) -> bool:
    """Whether ``key`` names a task's own input, made by :func:`new_blob_key` for one task
    (``<session>/input-<32 hex>``). Such a blob is deleted once its task has finished; blobs
    named otherwise (a shared upload, a shipped handler) stay until their session is deleted."""
    name = key.partition("/")[2]
    return len(name) == 38 and name.startswith("input-") and _is_hex(name[6:])


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def split_blob_key(key: str) -> tuple[str, str]:
    """Split a key into (session id, name), or raise :class:`InvalidInput` if it is malformed.

    Every store checks keys with it, so a key can never name a path outside its session.
    """
    session_id, slash, name = key.partition("/")
    if not slash:
        raise InvalidInput(f"malformed blob key {key!r}")
    blob_key(session_id, name)
    return session_id, name


class BlobStore(Protocol):
    """Put, get and delete opaque bytes by key."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete_session(self, session_id: str) -> None: ...


class GridBlobStore(BlobStore, Protocol):
    """The blob store as the grid's own processes see it: they may also drop single blobs."""

    def discard(self, keys: Sequence[str]) -> None:
        """Delete these blobs; keys that name no blob are ignored."""
        ...


class MemoryBlobStore:
    """Blobs in a dict, for the in-process memory backend."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        split_blob_key(key)
        with self._lock:
            self._data[key] = bytes(data)

    def get(self, key: str) -> bytes:
        split_blob_key(key)
        with self._lock:
            try:
                return self._data[key]
            except KeyError:
                raise NotFound(f"no blob {key!r}") from None

    def discard(self, keys: Sequence[str]) -> None:
        for key in keys:
            split_blob_key(key)
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def delete_session(self, session_id: str) -> None:
        prefix = check_session_id(session_id) + "/"
        with self._lock:
            for key in [k for k in self._data if k.startswith(prefix)]:
                del self._data[key]


#: The store URL option that keeps a Redis or PostgreSQL store's blobs as files instead.
BLOB_DIR_OPTION = "blobs"


def take_blob_dir(url: str) -> tuple[str, Path | None]:
    """Split ``blobs=/absolute/dir`` off a store URL's query: (the URL without it, the
    directory or None). The rest of the query is kept byte for byte (libpq reads it)."""
    head, sep, query = url.partition("?")
    if not sep:
        return url, None
    items = [item for item in query.split("&") if item]
    ours = [item for item in items if item.partition("=")[0] == BLOB_DIR_OPTION]
    if not ours:
        return url, None
    values = [unquote(item.partition("=")[2]) for item in ours]
    if len(values) > 1 or not values[0] or not Path(values[0]).is_absolute():
        raise InvalidInput(
            f"the store URL option {BLOB_DIR_OPTION}= takes one absolute directory path, "
            f"not {', '.join(map(repr, values))}: the same path on every machine of the grid"
        )
    rest = "&".join(item for item in items if item not in ours)
    return head + ("?" + rest if rest else ""), Path(values[0])


def open_blob_dir(root: Path) -> FileBlobStore:
    """The file blob store at ``root`` (made if missing); InvalidInput if it cannot be."""
    try:
        return FileBlobStore(root)
    except OSError as exc:
        raise InvalidInput(f"cannot use {root} as the blob directory: {exc}") from exc


class FileBlobStore:
    """Blobs as files under a directory, one sub-directory per session.

    Writes go to a temporary name and are renamed into place, so a reader never sees half a
    blob and a crash leaves at worst an orphan temporary file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        session_id, name = split_blob_key(key)
        return self.root / session_id / name

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {key!r}") from None

    def discard(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()

    def delete_session(self, session_id: str) -> None:
        shutil.rmtree(self.root / check_session_id(session_id), ignore_errors=True)
