"""The Redis link on a server that went silent: calls fail within the socket timeout.

A worker's heartbeat and agent call the store on connections that may die without a word
(a cable pulled, a host frozen). No Redis server is needed: the peer here accepts
connections and reads, but never answers, as a dead link looks from the client's side.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from htcgrid.backends.redis.link import SOCKET_TIMEOUT_S, Cmd, Link
from htcgrid.core.errors import BackendUnavailable

#: How long a call may take on a silent link: the socket timeout, plus room for a busy machine.
BOUND_S = SOCKET_TIMEOUT_S * 3


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port whose peer accepts, reads everything and never replies."""
    server = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setblocking(False)
            taken.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in taken:
            conn.close()
        server.close()


def test_a_call_to_a_silent_server_fails_instead_of_hanging(silent_port: int) -> None:
    link = Link(f"redis://127.0.0.1:{silent_port}/0")
    outcome: list[BaseException | object] = []

    def call() -> None:
        try:
            outcome.append(link.once(lambda: link.run([Cmd("PING")])))
        except BaseException as exc:  # reported by the assertions below
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=BOUND_S)
    try:
        assert not caller.is_alive(), f"a call to a silent server still blocks after {BOUND_S} s"
        [error] = outcome
        assert isinstance(error, BackendUnavailable), error
        assert "unavailable" in str(error)
    finally:
        link.close()


def test_a_url_sets_its_own_socket_timeout() -> None:
    link = Link("redis://127.0.0.1:6379/0?socket_timeout=0.5")
    try:
        assert link.block_step_s == pytest.approx(0.4)
    finally:
        link.close()
