"""The remote client goes through the proxy the environment names, as curl, requests and httpx
do: a real forward proxy (an HTTP server taking absolute-form requests) in front of the API."""

from __future__ import annotations

import http.server
import select
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import htcgrid
from htcgrid.api import ApiSettings
from htcgrid.api.serve import ApiThread, Listen
from htcgrid.backends.memory import MemoryBackend
from htcgrid.client.http import HttpStore
from tests.api.conftest import TOKEN_A, TOKENS, self_signed_certificate
from tests.api.relay import pass_on

_PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
)


class _ForwardProxy(http.server.ThreadingHTTPServer):
    """Relays each request to the host its absolute URL names; remembers what it relayed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # method, target, Proxy-Authorization
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    server: _ForwardProxy
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Proxy-Authorization")))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = urlsplit(self.path)
        if not target.hostname:  # origin-form: a client that did not treat us as a proxy
            self.send_error(400, "absolute URL expected")
            return
        path = target.path + (f"?{target.query}" if target.query else "")
        pass_on(self, target.hostname, target.port, path, body)

    do_GET = do_POST = do_PUT = do_DELETE = _relay

    def do_CONNECT(self) -> None:
        """A tunnel to ``host:port``: bytes both ways until either side closes."""
        self.server.seen.append((self.command, self.path, self.headers.get("Proxy-Authorization")))
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        ends = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(ends, [], [], 5)
                if not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ForwardProxy]:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = _ForwardProxy()
    yield server
    server.shutdown()
    server.server_close()


def test_calls_go_through_the_proxy_of_the_environment(
    memory_api: ApiThread, proxy: _ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.address}")
    store = HttpStore(memory_api.url, TOKEN_A)
    try:
        store.create_session("s-proxied", htcgrid.SessionSpec(), 0)
        assert store.get_session("s-proxied").session_id == "s-proxied"
    finally:
        store.close()
    origin = memory_api.url.rstrip("/")
    assert [(m, t) for m, t, _ in proxy.seen] == [
        ("GET", f"{origin}/v1/info"),
        ("POST", f"{origin}/v1/sessions"),
        ("GET", f"{origin}/v1/sessions/s-proxied"),
    ]
    assert all(auth is None for *_, auth in proxy.seen)


def test_the_proxy_url_may_carry_basic_authentication(
    memory_api: ApiThread, proxy: _ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://me:s%40cret@{proxy.address}")
    store = HttpStore(memory_api.url, TOKEN_A)
    store.close()
    [(_, _, auth)] = proxy.seen
    assert auth == "Basic bWU6c0BjcmV0"  # base64 of "me:s@cret"


def test_no_proxy_exempts_the_api_host(
    memory_api: ApiThread, proxy: _ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.address}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    store = HttpStore(memory_api.url, TOKEN_A)
    try:
        store.list_sessions()
    finally:
        store.close()
    assert proxy.seen == []


def test_a_malformed_proxy_url_is_refused_at_connect(
    memory_api: ApiThread, proxy: _ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "ftp://proxy.example:21")
    with pytest.raises(htcgrid.InvalidInput, match="malformed proxy URL"):
        HttpStore(memory_api.url, TOKEN_A)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_goes_through_a_connect_tunnel(
    tmp_path: Path, proxy: _ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    settings = ApiSettings(backend=MemoryBackend(), tokens=TOKENS)
    with ApiThread(settings, Listen(port=0, ssl_certfile=str(cert), ssl_keyfile=str(key))) as api:
        monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy.address}")
        store = HttpStore(api.url, TOKEN_A, verify=str(cert))
        try:
            store.create_session("s-tunnelled", htcgrid.SessionSpec(), 0)
            assert store.get_session("s-tunnelled").session_id == "s-tunnelled"
        finally:
            store.close()
        authority = api.url.removeprefix("https://").rstrip("/")
    assert [(m, t) for m, t, _ in proxy.seen] == [("CONNECT", authority)]
