"""The backend's connection to Redis: error mapping, automatic retries, scripts in pipelines.

redis-py itself is told never to retry (``Retry(NoBackoff(), 0)``): whether a failed call may
be repeated depends on the operation, not the command, so the backend wraps each whole
operation in :meth:`Link.safely` (retried with backoff on connection errors and timeouts,
for reads and for writes that are safe to repeat after an unknown outcome) or
:meth:`Link.once` (not retried: the caller sees :class:`BackendUnavailable`). Either way the
broken connection is dropped and the next call reconnects.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import PythonRespSerializer
from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.retry import Retry

from htcgrid.backends.redis.scripts import Script
from htcgrid.core.errors import BackendUnavailable, InvalidInput

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
#: How long one read or write may wait on a connection. A call on a link that died without
#: a word (a cable pulled, a host gone) fails after this instead of when TCP gives up, about
#: 15 minutes later; redis-py before 6 waits that long by default. A URL's
#: ``?socket_timeout=`` overrides it; the grid's blocking reads wait in shorter steps.
SOCKET_TIMEOUT_S = 5.0
#: Values longer than this go to the socket as they are on a link that carries payloads.
_UNCOPIED_BYTES = 6000

#: redis-py before 5.3 wants a command name to hand out a pooled connection; later versions
#: warn when given one (and the test suite turns warnings into errors).
_POOL_WANTS_NAME = (
    inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


@dataclass(frozen=True, slots=True)
class Eval:
    """One script call in a pipeline."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


class Cmd:
    """One plain command in a pipeline; its reply is the server's, as hiredis parses it
    (no redis-py response callback: SMEMBERS gives a list, WITHSCORES a flat list)."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args


class Link:
    """A redis-py client with the grid's error and retry rules."""

    def __init__(self, redis_url: str, *, carries_payloads: bool = False) -> None:
        """``carries_payloads``: for a link that writes large values (the blob store's), so
        commands are packed without copying them; the many small commands of the state
        operations pack faster with hiredis."""
        try:
            self.client = redis.Redis.from_url(
                redis_url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:  # redis-py's message for a URL it cannot parse
            raise InvalidInput(f"malformed Redis URL: {exc}") from exc
        pool = self.client.connection_pool
        options = pool.connection_kwargs
        if carries_payloads:  # set before the pool makes its first connection
            # redis-py's pure-Python packer hands a long value to the socket as it is, where
            # hiredis's (the default with hiredis) copies the whole command into a new
            # buffer: for a megabyte, that copy and the page faults of a fresh buffer cost
            # more than the send.
            encode = pool.get_encoder().encode
            options["command_packer"] = PythonRespSerializer(_UNCOPIED_BYTES, encode)
        if options.get("decode_responses"):
            raise InvalidInput("the store URL must not set decode_responses: payloads are bytes")
        if "path" in options:
            self.where = f"Redis at {options['path']} (db {options.get('db', 0)})"
        else:
            host, port = options.get("host", "localhost"), options.get("port", 6379)
            self.where = f"Redis at {host}:{port} (db {options.get('db', 0)})"
        socket_timeout_s = options.get("socket_timeout")
        #: The longest one blocking read may wait without tripping the socket timeout.
        self.block_step_s: float | None = (
            None if socket_timeout_s is None else max(0.01, socket_timeout_s * 0.8)
        )
        # a whole safe operation is repeated 0.1, 0.2, 0.4, 0.8, 1.6 s apart (3 s in all)
        self._retry = Retry(
            ExponentialBackoff(cap=2, base=0.05), 5, (ConnectionError, TimeoutError)
        )
        self._is_closed = False

    def safely(self, op: Callable[[], T]) -> T:
        """Run ``op``, repeating it after connection errors; it must be safe to repeat."""
        return self._guard(lambda: self._retry.call_with_retry(op, _ignore))

    def once(self, op: Callable[[], T]) -> T:
        """Run ``op`` once: a connection error surfaces as BackendUnavailable."""
        return self._guard(op)

    def run(self, calls: Sequence[Eval | Cmd]) -> list[Any]:
        """Send ``calls`` in one round trip (not a transaction: each script is atomic on its
        own) and return their replies; raise the first error among them.

        A script the server does not know (it restarted or flushed its cache) is loaded and
        only the calls that failed so are sent again, with the plain commands of the batch,
        which are wake-up hints safe to repeat.
        """
        replies = self._send(calls)
        missing = [k for k, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            scripts = {c.script for k in missing if isinstance(c := calls[k], Eval)}
            for script in scripts:
                self.client.script_load(script.source)
            again = [k for k, c in enumerate(calls) if k in missing or isinstance(c, Cmd)]
            for k, reply in zip(again, self._send([calls[k] for k in again]), strict=True):
                replies[k] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script and return its reply."""
        return self.run([Eval(script, keys, args)])[0]

    def close(self) -> None:
        self._is_closed = True
        self.client.close()

    def _send(self, calls: Sequence[Eval | Cmd]) -> list[Any]:
        """Write every call on one pooled connection, then read every reply; an error reply
        is returned in its place, not raised.

        This is what a redis-py pipeline does, without its per-command bookkeeping
        (command stack, response callbacks, instrumentation), which cost a small call
        about as much CPU as the server spends running it.
        """
        commands = [
            ("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
            if isinstance(c, Eval)
            else c.args
            for c in calls
        ]
        pool = self.client.connection_pool
        # Any: redis-py leaves the connection's methods untyped
        conn: Any = pool.get_connection("EVALSHA") if _POOL_WANTS_NAME else pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # the connection is still in step
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)

    def _guard(self, op: Callable[[], T]) -> T:
        if self._is_closed:
            raise BackendUnavailable(f"the store at {self.where} was closed")
        try:
            return op()
        except (ConnectionError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self.where} is unavailable: {exc}") from exc
        except RedisError as exc:
            raise BackendUnavailable(f"{self.where} refused the operation: {exc}") from exc


def _ignore(error: Exception) -> None:
    """redis-py has already dropped the broken connection; nothing else to undo."""
