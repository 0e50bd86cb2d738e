"""Test hosts for multi-host drills: network namespaces joined to this one by veth links.

Each :class:`Host` is a network namespace with one veth link to the test's own namespace,
addressed inside 10.231.0.0/16 (private, on this machine only). The store stays on loopback;
a :class:`Forwarder` in this namespace listens on the host side of each link and relays to
it, so cutting a link (``Host.cut``) cuts exactly that host off the store, as a pulled cable
would: packets are dropped, connections hang, nothing is reset.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence

from tests.stores import missing_service


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's 'ip' command is missing"
    probe = f"htcg-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"'ip netns add' failed: {exc.stderr.decode(errors='replace').strip()}"
    _ip("netns", "delete", probe)
    return None


def require_netns() -> None:
    """Skip (or fail under CI) when this machine cannot make network namespaces."""
    why = netns_unavailable()
    if why is not None:
        missing_service("network namespaces", why)


class Host:
    """A network namespace with a veth link to ours: ``address`` is its side, ``gateway``
    ours. Processes started with :meth:`command` run inside it."""

    def __init__(self, index: int) -> None:
        tag = secrets.token_hex(2)
        self.name = f"htcg-{tag}-h{index}"
        self._outer = f"hg{tag}{index}o"  # interface names: 15 characters at most
        self._inner = f"hg{tag}{index}i"
        self.gateway = f"10.231.{index}.1"
        self.address = f"10.231.{index}.2"
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self._outer, "type", "veth", "peer", "name", self._inner)
            _ip("link", "set", self._inner, "netns", self.name)
            _ip("addr", "add", f"{self.gateway}/24", "dev", self._outer)
            _ip("link", "set", self._outer, "up")
            self._in("addr", "add", f"{self.address}/24", "dev", self._inner)
            self._in("link", "set", self._inner, "up")
            self._in("link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.remove()
            raise

    def _in(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Pull the cable: the host keeps running but reaches nothing."""
        _ip("link", "set", self._outer, "down")

    def restore(self) -> None:
        _ip("link", "set", self._outer, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "delete", self._outer], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)


class Forwarder:
    """Relays TCP connections from ``listen`` addresses to ``target`` on loopback, on a
    thread, so hosts in other namespaces reach a store that listens on 127.0.0.1 only."""

    def __init__(self, listen: Sequence[str], target: tuple[str, int]) -> None:
        self.target = target
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self.port = 0
        for address in listen:
            s = socket.create_server((address, self.port))
            self.port = s.getsockname()[1]  # the same port on every address
            s.setblocking(False)
            self._selector.register(s, selectors.EVENT_READ, None)
            self._listeners.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcgrid-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if key.data is None:
                    self._accept(sock)
                else:
                    self._relay(sock, key.data)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            return
        for a, b in ((client, upstream), (upstream, client)):
            a.setblocking(False)
            self._selector.register(a, selectors.EVENT_READ, b)

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(1 << 16)
            if data:
                sink.setblocking(True)
                sink.settimeout(30)
                sink.sendall(data)
                sink.setblocking(False)
                return
        except OSError:
            pass
        for s in (source, sink):  # one side closed: close both
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
