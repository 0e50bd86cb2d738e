"""Pieces of the tests' own HTTP proxies (real servers in front of the API)."""

from __future__ import annotations

import http.client
import http.server

#: Headers meant for a proxy, not passed on.
_HOP_HEADERS = frozenset({"host", "proxy-authorization", "proxy-connection"})


def answer(
    handler: http.server.BaseHTTPRequestHandler, status: int, kind: str, body: bytes
) -> None:
    """Send a whole response on ``handler``'s connection."""
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def pass_on(
    handler: http.server.BaseHTTPRequestHandler, host: str, port: int | None, path: str, body: bytes
) -> None:
    """Send the request ``handler`` received to ``host:port`` as ``path``, and its answer
    back."""
    upstream = http.client.HTTPConnection(host, port)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
    upstream.request(handler.command, path, body or None, headers)
    reply = upstream.getresponse()
    content = reply.read()
    upstream.close()
    answer(handler, reply.status, reply.getheader("Content-Type") or "text/plain", content)
