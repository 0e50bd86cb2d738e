"""Session and task ids: stable strings users can keep and look up later.

A task id is ``<session_id>.<index>``, the index counting submissions in the session from 0,
so ids sort in submission order within a session and name their session.
"""

from __future__ import annotations

import re
import secrets

from htcgrid.core.errors import InvalidInput

_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INDEX_RE = re.compile(r"0|[1-9][0-9]*")  # ASCII and canonical: the inverse of task_id


def new_session_id() -> str:
    """A fresh random session id (96 bits, URL-safe)."""
    return "s" + secrets.token_hex(12)


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` unchanged, or raise :class:`InvalidInput` if it is malformed."""
    if not isinstance(session_id, str) or not _SESSION_RE.fullmatch(session_id):
        raise InvalidInput(
            f"malformed session id {session_id!r}: use 1-64 letters, digits, '-' or '_'"
        )
    return session_id


def task_id(session_id: str, index: int) -> str:
    """The id of the ``index``-th task submitted to ``session_id``."""
    return f"{session_id}.{index}"


def split_task_id(tid: str) -> tuple[str, int]:
    """Split a task id into (session id, index), or raise :class:`InvalidInput`."""
    session_id, dot, index = tid.rpartition(".")
    if not dot or not _INDEX_RE.fullmatch(index):
        raise InvalidInput(f"malformed task id {tid!r}: expected '<session id>.<index>'")
    return check_session_id(session_id), int(index)
