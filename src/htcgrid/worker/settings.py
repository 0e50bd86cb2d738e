"""Worker settings: everything a worker needs, given explicitly (no config reads here)."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from htcgrid.backends.blobs import DEFAULT_INLINE_LIMIT
from htcgrid.core.errors import InvalidInput


def default_worker_id() -> str:
    """``<hostname>-<pid>-<4 random hex>``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker (agent process + executor processes) runs."""

    store_url: str
    concurrency: int = 1  # executor processes
    lease_ttl_s: float = 15.0  # heartbeats renew every ttl/3
    allow_pickle: bool = True  # False refuses pickled handlers and pickle-encoded payloads
    max_memory_mb: int | None = None  # RLIMIT_AS of each executor
    inline_limit: int = DEFAULT_INLINE_LIMIT  # larger results go to the blob store
    worker_id: str | None = None  # default: default_worker_id()
    max_batch: int = 256  # most tasks queued on one executor
    drain_timeout_s: float = 60.0  # a graceful stop gives up (kills executors) after this
    idle_wait_s: float = 0.25  # longest block in wait_for_work while nothing runs

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, not {self.concurrency}")
        if self.lease_ttl_s <= 0:
            raise InvalidInput(f"lease TTL must be positive, not {self.lease_ttl_s}")
        if self.max_memory_mb is not None and self.max_memory_mb < 16:
            raise InvalidInput(f"max_memory_mb must be at least 16, not {self.max_memory_mb}")
        if self.max_batch < 1:
            raise InvalidInput(f"max_batch must be at least 1, not {self.max_batch}")
        if self.inline_limit < 0:
            raise InvalidInput(f"inline_limit must not be negative, not {self.inline_limit}")
