"""A drop-in for HTC-Grid's Python connector: ``init``, ``authenticate``, ``send``,
``get_results``, ``cancel_sessions``, over htcgrid's client.

An HTC-Grid client script keeps its flow; it changes its import
(``from htcgrid.compat import AWSConnector``) and its config file. Config keys are read as
HTC-Grid names them where there is a counterpart:

======================================  ==================================================
HTC-Grid key                            htcgrid meaning
======================================  ==================================================
``public_api_gateway_url``              the API URL (a trailing ``/v1`` stage is dropped);
``private_api_gateway_url``             ...the private one when ``$INTRA_VPC`` is set
``api_gateway_key``                     the bearer token (else ``api_token``, ``$HTCGRID_TOKEN``)
``grid_storage_service``                a store URL (``sqlite://``, ``redis://``...) connects
                                        directly, as HTC-Grid's agents do; S3/REDIS: ignored
``lambda_handler_file_name`` +          the handler ``file:function`` (or ``handler``,
``lambda_handler_function_name``        default ``htcgrid.workloads:mock_computation``)
``task_timeout_sec``, ``retry_count``   session ``timeout_s``, ``max_attempts = retry_count+1``
======================================  ==================================================

Every other HTC-Grid key (region, Cognito pool, buckets, poll intervals) is accepted and
ignored: results are long-polled, payloads are inline or blobs without configuration.

Tasks are JSON dicts, sent with the msgpack codec. Outputs come back as HTC-Grid gave them:
the handler's string result as is, any other result as JSON text. Unlike HTC-Grid,
``get_results`` says when it timed out and which tasks are still unfinished
(``metadata["timed_out"]``, ``metadata["unfinished"]``) instead of returning a silent part.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from htcgrid.client.grid import Grid, connect
from htcgrid.client.payloads import HandlerRefs, new_task
from htcgrid.client.reconnect import retrying
from htcgrid.core.errors import GridError, InvalidInput, TaskError
from htcgrid.core.model import Codec
from htcgrid.core.states import TaskState

log = logging.getLogger(__name__)

#: The handler when the config names none: HTC-Grid's mock computation, ported.
DEFAULT_HANDLER = "htcgrid.workloads:mock_computation"
_STORE_SCHEMES = ("sqlite://", "memory://", "redis://", "rediss://", "postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class CompatConfig:
    """htcgrid's reading of an HTC-Grid ``Agent_config.tfvars.json``."""

    url: str | None  # API URL or store URL; None: the default embedded grid
    token: str | None
    handler: str
    timeout_s: float | None = None
    max_attempts: int = 3

    @classmethod
    def from_htcgrid(cls, config: Mapping[str, Any]) -> CompatConfig:
        private = os.environ.get("INTRA_VPC")
        url = config.get("api_url") or config.get(
            "private_api_gateway_url" if private else "public_api_gateway_url"
        )
        storage = str(config.get("grid_storage_service") or "")
        if not url and storage.startswith(_STORE_SCHEMES):
            url = storage
        if url:
            url = str(url).rstrip("/").removesuffix("/v1")
        token = config.get("api_gateway_key") or config.get("api_token")
        if isinstance(token, Mapping):  # HTC-Grid keeps it as {"api_key": ...}
            token = token.get("api_key")
        handler = config.get("handler")
        if not handler and config.get("lambda_handler_file_name"):
            fn = config.get("lambda_handler_function_name") or "lambda_handler"
            handler = f"{config['lambda_handler_file_name']}:{fn}"
        timeout = config.get("task_timeout_sec")
        retries = config.get("retry_count")
        return cls(
            url=url or None,
            token=str(token) if token else None,
            handler=str(handler or DEFAULT_HANDLER),
            timeout_s=float(timeout) if timeout else None,
            max_attempts=int(retries) + 1 if retries is not None else 3,
        )


class AWSConnector:
    """HTC-Grid's connector, backed by htcgrid. Call :meth:`init`, then :meth:`authenticate`
    (which connects and checks the token), then :meth:`send` and :meth:`get_results`."""

    def __init__(self, agent_config_data: Mapping[str, Any] | None = None) -> None:
        self.config: CompatConfig | None = None
        self._grid: Grid | None = None
        if agent_config_data is not None:  # some HTC-Grid examples pass it here
            self.init(agent_config_data)

    def init(
        self,
        agent_config_data: Mapping[str, Any],
        username: str = "",
        password: str = "",
        **test_hooks: Any,
    ) -> None:
        """Read the config (Cognito ``username``/``password`` and test hooks are ignored:
        htcgrid authenticates with the bearer token)."""
        self.config = CompatConfig.from_htcgrid(agent_config_data)

    def authenticate(self) -> None:
        """Connect; with an API URL this checks the token (Unauthorized if refused)."""
        config = self._config()
        if self._grid is None:
            self._grid = connect(config.url, token=config.token)

    def send(self, tasks_list: Sequence[Mapping[str, Any]], priority: int = 0) -> dict[str, Any]:
        """Submit the tasks as one new session; return ``{"session_id", "task_ids"}`` with
        the ids in submission order. The batch is keyed, so a retry adds no duplicate."""
        grid, config = self._connected(), self._config()
        if not isinstance(tasks_list, Sequence) or not tasks_list:
            raise InvalidInput("send() takes a non-empty list of task dicts")
        session = grid.session(
            priority=priority,
            max_attempts=config.max_attempts,
            timeout_s=config.timeout_s,
            codec=Codec.MSGPACK,
            name="htcgrid.compat",
        )
        store, sid = grid.backend, session.session_id
        ref = HandlerRefs(sid, store.blobs).ref(config.handler)
        inline = grid.inline_limit
        tasks = [
            new_task(
                ref, dict(t), Codec.MSGPACK, session_id=sid, blobs=store.blobs, inline_limit=inline
            )
            for t in tasks_list
        ]
        key = uuid.uuid4().hex
        ids = retrying(lambda: store.submit(sid, tasks, time.time(), batch_key=key), "send")
        session.close()
        return {"session_id": sid, "task_ids": ids}

    def get_results(
        self, submission_response: Mapping[str, Any], timeout_sec: float = 0
    ) -> dict[str, Any]:
        """Wait up to ``timeout_sec`` (0: for ever) for the session's tasks; return HTC-Grid's
        result dict, with ``metadata`` saying whether it timed out and what is unfinished."""
        grid = self._connected()
        sid = submission_response["session_id"]
        task_ids = list(submission_response.get("task_ids", []))
        session = grid.attach(sid, codec=Codec.MSGPACK)
        out: dict[str, Any] = {k: [] for k in _KEYS}
        seen: set[str] = set()
        timed_out = False
        try:
            for r in session.results(timeout=timeout_sec or None):
                seen.add(r.task_id)
                state = _STATE_KEY[r.state]
                out[state].append(r.task_id)
                out[f"{state}_OUTPUT"].append(_output(r.value) if r.is_ok else _error(r.error))
        except TimeoutError:
            timed_out = True
        finally:
            session.close()
        unfinished = [t for t in task_ids if t not in seen]
        out["metadata"] = {
            "tasks_in_response": len(seen),
            "timed_out": timed_out,
            "unfinished": unfinished,
        }
        if unfinished:
            log.warning(
                "session %s: %d task(s) unfinished after %s s", sid, len(unfinished), timeout_sec
            )
        return out

    def cancel_sessions(self, session_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Cancel whole sessions; per session, how many pending and running tasks stopped."""
        grid = self._connected()
        answer = {}
        for sid in session_ids:
            session = grid.attach(sid)
            before = session.counts()
            n = session.cancel()
            pending = min(before.pending, n)
            answer[sid] = {
                "cancelled_pending": pending,
                "cancelled_processing": n - pending,
                "total_cancelled_tasks": n,
            }
            session.close()
        return answer

    def close(self) -> None:
        if self._grid is not None:
            self._grid.close()
            self._grid = None

    def _config(self) -> CompatConfig:
        if self.config is None:
            raise InvalidInput("call init(config) first")
        return self.config

    def _connected(self) -> Grid:
        if self._grid is None:
            self.authenticate()
        assert self._grid is not None
        return self._grid


#: htcgrid's name for the same connector.
GridConnector = AWSConnector

_STATE_KEY = {
    TaskState.SUCCEEDED: "finished",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
}
_KEYS = ("finished", "finished_OUTPUT", "failed", "failed_OUTPUT", "cancelled", "cancelled_OUTPUT")


def _output(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _error(err: BaseException | None) -> str:
    if isinstance(err, TaskError):
        return f"{err.error_type}: {err.message}"
    if isinstance(err, GridError) or err is None:
        return str(err or "cancelled")
    return f"{type(err).__name__}: {err}"
