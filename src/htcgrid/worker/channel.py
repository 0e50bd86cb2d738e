"""A message channel over a stream socket: length-prefixed frames, drained in bulk.

Reading everything a socket holds in one ``recv`` and splitting the frames locally costs one
system call per wake-up instead of two or three per message, which matters when an executor
answers thousands of no-op tasks a second.
"""

from __future__ import annotations

import socket
import struct

_HEADER = struct.Struct("!I")
_CHUNK = 256 * 1024
_COPY_LIMIT = 64 * 1024  # below this, one sendall of header + data beats two system calls
_MAX_DRAIN = 8 * 1024 * 1024  # a non-blocking receive returns after this much, to stay fair


def frame(data: bytes) -> tuple[bytes, ...]:
    """A message as the buffers to write: its length header and its bytes (copied into one
    buffer when small, where one system call beats two)."""
    header = _HEADER.pack(len(data))
    return (header + data,) if len(data) < _COPY_LIMIT else (header, data)


class Channel:
    """One end of an agent <-> executor connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._is_eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        """Send one message; blocks while the peer's buffer is full."""
        for part in frame(data):
            self.sock.sendall(part)

    def send_all(self, messages: list[bytes]) -> None:
        """Send several messages with as few system calls as their sizes allow."""
        if len(messages) == 1:
            self.send(messages[0])
            return
        parts = [part for data in messages for part in frame(data)]
        small = b"".join(parts) if sum(map(len, parts)) < _COPY_LIMIT else None
        for part in (small,) if small is not None else parts:
            self.sock.sendall(part)

    def write_now(self, buffer: bytes) -> bytes:
        """Write as much of ``buffer`` (framed bytes, see :func:`frame`) as the socket takes
        without blocking; return the rest, which must be written before anything else."""
        try:
            sent = self.sock.send(buffer, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        return buffer[sent:]

    def receive(self, block: bool) -> list[bytes]:
        """Messages available now; with ``block``, wait for at least one.

        Raises EOFError once the peer has closed and every complete message was returned.
        """
        while True:
            if self._is_eof:
                frames = self._frames()
                if frames:
                    return frames
                raise EOFError("channel closed")
            self._read(block)
            frames = self._frames()
            if frames or not block:
                return frames

    def close(self) -> None:
        self.sock.close()

    def _read(self, block: bool) -> None:
        flags = 0 if block else socket.MSG_DONTWAIT
        got = 0
        while got < _MAX_DRAIN:
            try:
                chunk = self.sock.recv(max(_CHUNK, self._missing()), flags)
            except BlockingIOError:
                return
            if not chunk:
                self._is_eof = True
                return
            self._buf += chunk
            got += len(chunk)
            if block:
                return
            flags = socket.MSG_DONTWAIT

    def _frames(self) -> list[bytes]:
        buf = self._buf
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if end - pos - 4 < size:
                break
            with memoryview(buf) as view:  # one copy out of the buffer, not two
                frames.append(bytes(view[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames

    def _missing(self) -> int:
        """Bytes still to come of the message at the head of the buffer (0 if unknown), so a
        large payload is read in one call instead of many small ones."""
        if len(self._buf) < 4:
            return 0
        size: int = _HEADER.unpack_from(self._buf, 0)[0]
        return max(0, 4 + size - len(self._buf))
