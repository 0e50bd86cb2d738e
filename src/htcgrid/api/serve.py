"""Serving the API with uvicorn: in the foreground (``htcgrid api``), as several uvicorn worker
processes on one store (``--workers N``), or on a thread next to an embedded grid
(``htcgrid up``, tests).

uvicorn's worker processes import the app by name, so for ``--workers N`` the settings travel
in environment variables that :func:`app_from_env` reads; that is the only place the API
reads its configuration from the environment.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from fastapi import FastAPI

from htcgrid.api.app import create_app
from htcgrid.api.auth import TokenFile
from htcgrid.api.settings import ApiSettings
from htcgrid.api.wire import Limits
from htcgrid.core.errors import InvalidInput
from htcgrid.core.handlers import HandlerKind

#: Variables that hand the settings to uvicorn's worker processes.
STORE_VAR = "HTCGRID_API_STORE"
TOKENS_VAR = "HTCGRID_API_TOKENS"
LIMITS_VAR = "HTCGRID_API_LIMITS"
HANDLERS_VAR = "HTCGRID_API_HANDLERS"
ROOT_VAR = "HTCGRID_API_ROOT_PATH"


@dataclass(frozen=True, kw_only=True)
class Listen:
    """Where and how to listen."""

    host: str = "127.0.0.1"
    port: int = 8765
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    workers: int = 1
    access_log: bool = True
    log_level: str = "info"

    def uvicorn_options(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "access_log": self.access_log,
            "log_level": self.log_level,
            "server_header": False,
            "timeout_graceful_shutdown": 5,
            "ws": "none",  # no websockets routes; and no import of a websockets library
            "lifespan": "on",
        }


def settings_env(settings: ApiSettings, tokens_path: Path) -> dict[str, str]:
    """The environment :func:`app_from_env` rebuilds ``settings`` from."""
    if settings.store_url is None:
        raise InvalidInput("several API processes need a store URL, not a store object")
    return {
        STORE_VAR: settings.store_url,
        TOKENS_VAR: str(tokens_path),
        LIMITS_VAR: msgspec.json.encode(settings.limits).decode(),
        HANDLERS_VAR: ",".join(sorted(k.value for k in settings.handler_kinds)),
        ROOT_VAR: settings.root_path,
    }


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process, from the variables :func:`settings_env` set."""
    try:
        store, tokens = os.environ[STORE_VAR], os.environ[TOKENS_VAR]
    except KeyError as exc:
        raise InvalidInput(f"${exc.args[0]} is not set: start the API with 'htcgrid api'") from None
    limits = msgspec.json.decode(os.environ.get(LIMITS_VAR, "{}"), type=Limits)
    kinds = os.environ.get(HANDLERS_VAR, ",".join(k.value for k in HandlerKind))
    return create_app(
        ApiSettings(
            store_url=store,
            tokens=TokenFile(Path(tokens)),
            limits=limits,
            handler_kinds=frozenset(HandlerKind(k) for k in kinds.split(",") if k),
            root_path=os.environ.get(ROOT_VAR, ""),
        )
    )


def serve(settings: ApiSettings, listen: Listen, tokens_path: Path | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM. With ``listen.workers > 1``, uvicorn
    forks that many processes, each with its own app on the same store (they share nothing
    else: the API is stateless)."""
    if listen.workers > 1:
        if tokens_path is None:
            raise InvalidInput("several API processes need a tokens file")
        os.environ.update(settings_env(settings, tokens_path))
        uvicorn.run(
            f"{__name__}:app_from_env",
            factory=True,
            workers=listen.workers,
            **listen.uvicorn_options(),
        )
    else:
        uvicorn.run(create_app(settings), **listen.uvicorn_options())


class ApiThread:
    """The API served on a background thread of this process (next to an embedded grid, or
    in tests). The socket is bound before the thread starts, so port 0 picks a free port and
    :attr:`url` is right at once."""

    def __init__(self, settings: ApiSettings, listen: Listen) -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen.host, listen.port))
        self.port: int = self._sock.getsockname()[1]
        scheme = "https" if listen.ssl_certfile else "http"
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        self.url = f"{scheme}://{host}:{self.port}"
        # log_config None: uvicorn's records go to this process's own logging set-up
        options = listen.uvicorn_options() | {"port": self.port, "log_config": None}
        config = uvicorn.Config(create_app(settings), **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="htcgrid-api", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 10.0) -> ApiThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the API did not start on {self.url}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ApiThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
