"""Where the Redis backend keeps what (the key schema) and how it encodes task values.

Every key of one session shares the hash tag ``{<prefix>:<session id>}``, so a session lives
in one Redis Cluster slot and each script touches one slot. The few store-wide keys share
the tag ``{<prefix>}``. docs/redis.md describes each key.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import Codec, ErrorInfo, FailureKind

DEFAULT_PREFIX = "htcgrid"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: Position (1-based, as Lua counts) of each failure counter in a task's state array.
COUNTER_POSITION = {
    FailureKind.ERROR: 6,
    FailureKind.REFUSED: 6,
    FailureKind.TIMEOUT: 7,
    FailureKind.LOST: 8,
}


def split_url(url: str) -> tuple[str, str]:
    """Split a store URL into (the URL for redis-py, the key prefix from ``?prefix=``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if len(prefixes) > 1:
        raise InvalidInput(f"store URL {url!r} names more than one prefix")
    prefix = prefixes[0] if prefixes else DEFAULT_PREFIX
    if not _PREFIX_RE.fullmatch(prefix):
        raise InvalidInput(
            f"malformed key prefix {prefix!r} in the store URL: use 1-64 letters, digits, "
            "'.', '_' or '-'"
        )
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class StoreKeys:
    """The store-wide keys, tagged ``{prefix}``."""

    def __init__(self, prefix: str) -> None:
        tag = "{" + prefix + "}"
        self.prefix = prefix
        self.sessions = f"{tag}:sessions"  # ZSET session id -> creation number
        self.seq = f"{tag}:seq"  # STRING: the last creation number
        self.ready = f"{tag}:ready"  # SET: sessions that may have pending tasks (a hint)
        self.wake = f"{tag}:wake"  # LIST: wake tokens, one per submit or retry (capped)

    def session(self, session_id: str) -> SessionKeys:
        return SessionKeys(self.prefix, session_id)


class SessionKeys:
    """The keys of one session, all tagged ``{prefix:session_id}``."""

    __slots__ = (
        "batches",
        "blob_prefix",
        "blobs",
        "delayed",
        "done",
        "events",
        "input",
        "leases",
        "meta",
        "outcome",
        "pending",
        "state",
    )

    def __init__(self, prefix: str, session_id: str) -> None:
        tag = "{" + prefix + ":" + session_id + "}"
        self.meta = f"{tag}:meta"  # HASH: spec, counters, next_index, last_done_seq...
        self.input = f"{tag}:input"  # HASH index -> Input (immutable)
        self.state = f"{tag}:state"  # HASH index -> State (changed by the scripts)
        self.outcome = f"{tag}:outcome"  # HASH index -> Outcome of the last ended attempt
        self.pending = f"{tag}:pending"  # ZSET index by index: claimable now
        self.delayed = f"{tag}:delayed"  # ZSET index by not_before: retries not yet due
        self.leases = f"{tag}:leases"  # ZSET index by lease_expiry: running tasks
        self.done = f"{tag}:done"  # ZSET index by done_seq: the finished stream
        self.batches = f"{tag}:batches"  # HASH batch key -> "first:count"
        self.events = f"{tag}:events"  # STREAM (MAXLEN 1): ID <last_done_seq>-0
        self.blobs = f"{tag}:blobs"  # SET of blob names
        self.blob_prefix = f"{tag}:blob:"  # STRING per blob: <blob_prefix><name>

    # the KEYS of each script, in the order the script reads them (see scripts.py)
    def submit_keys(self) -> list[str]:
        return [self.meta, self.batches, self.input, self.state, self.pending]

    def finished_keys(self) -> list[str]:
        return [self.meta, self.done, self.state, self.outcome]

    def claim_keys(self) -> list[str]:
        return [self.meta, self.pending, self.delayed, self.state, self.input, self.leases]

    def transition_keys(self) -> list[str]:
        """Of END_ATTEMPTS and CANCEL."""
        return [
            self.meta,
            self.state,
            self.outcome,
            self.pending,
            self.delayed,
            self.leases,
            self.done,
            self.events,
        ]

    def renew_keys(self) -> list[str]:
        return [self.state, self.leases]

    def records_keys(self) -> list[str]:
        return [self.meta, self.state, self.outcome]

    def expired_keys(self) -> list[str]:
        return [self.meta, self.leases, self.state]

    def all(self) -> list[str]:
        """Every fixed key, meta first and the blob index last (the DELETE script's order)."""
        return [
            self.meta,
            self.input,
            self.state,
            self.outcome,
            self.pending,
            self.delayed,
            self.leases,
            self.done,
            self.batches,
            self.events,
            self.blobs,
        ]


class Input(msgspec.Struct, array_like=True, frozen=True):
    """What a task runs, written once at submit."""

    handler: str
    codec: Codec
    payload: bytes | None
    payload_ref: str | None
    timeout_s: float | None  # the task's own; the session's default applies when None


class State(msgspec.Struct, array_like=True):
    """A task's changing state; the Lua scripts index it 1-based in this field order."""

    state: int  # 1
    attempt: int  # 2
    worker_id: str  # 3: "" when not running
    lease_expiry: float  # 4
    not_before: float  # 5
    n_errors: int  # 6
    n_timeouts: int  # 7
    n_lost: int  # 8
    submitted_at: float  # 9
    finished_at: float  # 10: meaningful when done_seq > 0
    done_seq: int  # 11: 0 until the task finished
    codec: Codec  # 12


class Outcome(msgspec.Struct, array_like=True, frozen=True):
    """What the last ended attempt reported (cleared when the task is cancelled)."""

    result: bytes | None
    result_ref: str | None
    error: ErrorInfo | None
