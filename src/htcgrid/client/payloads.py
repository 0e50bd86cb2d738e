"""Turning a call into a stored task, and a stored outcome back into a value or an exception.

The client side of the data plane: payloads above the inline limit go to the blob store,
functions that workers cannot import are shipped once per session with cloudpickle.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from htcgrid import codec as codecs
from htcgrid.backends.blobs import BlobStore, blob_key, new_blob_key
from htcgrid.core.errors import InvalidInput, TaskCancelled, TaskError
from htcgrid.core.handlers import command_handler, import_handler, parse_handler, pickle_handler
from htcgrid.core.model import Codec, ErrorInfo, NewTask, TaskRecord
from htcgrid.core.states import TaskState

#: Largest payload the client accepts for one task, whatever the store.
DEFAULT_MAX_PAYLOAD = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Command:
    """An executable handler: the task's input (a list of strings) is appended to ``argv``
    and the program's standard output becomes the result."""

    argv: tuple[str, ...]

    def __init__(self, argv: list[str] | tuple[str, ...]) -> None:
        object.__setattr__(self, "argv", tuple(argv))


Handler = Callable[..., Any] | str | Command


class RemoteTraceback(Exception):
    """Carries the worker-side traceback as the ``__cause__`` of a re-raised task exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class HandlerRefs:
    """Resolves handlers to stored references, uploading each shipped function only once."""

    def __init__(self, session_id: str, blobs: BlobStore) -> None:
        self._session_id = session_id
        self._blobs = blobs
        self._cache: dict[int, tuple[Any, str]] = {}

    def ref(self, handler: Handler) -> str:
        """The stored reference of ``handler``; InvalidInput with a hint if it is unusable."""
        if isinstance(handler, Command):
            return command_handler(list(handler.argv))
        if isinstance(handler, str):
            if handler.startswith(("import:", "command:")):
                return str(parse_handler(handler))
            return import_handler(handler)
        if not callable(handler):
            raise InvalidInput(
                f"a handler must be a callable, a 'pkg.module:function' string or a Command, "
                f"not {type(handler).__name__}"
            )
        cached = self._cache.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        ref = _importable_ref(handler) or self._ship(handler)
        self._cache[id(handler)] = (handler, ref)
        return ref

    def _ship(self, handler: Callable[..., Any]) -> str:
        try:
            data: bytes = cloudpickle.dumps(handler, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise InvalidInput(f"cannot ship handler {handler!r} to workers: {exc}") from exc
        key = blob_key(self._session_id, "handler-" + hashlib.sha256(data).hexdigest()[:32])
        self._blobs.put(key, data)
        return pickle_handler(key)


def _importable_ref(fn: Callable[..., Any]) -> str | None:
    """``import:module:qualname`` when workers can import ``fn`` by name, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return f"import:{module}:{qualname}" if target is fn else None


def new_task(
    ref: str,
    value: Any,
    codec: Codec,
    *,
    session_id: str,
    blobs: BlobStore,
    inline_limit: int,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    timeout_s: float | None = None,
) -> NewTask:
    """Encode one task input; payloads above ``inline_limit`` go to the blob store."""
    data = codecs.encode(value, codec)
    if len(data) > max_payload:
        raise InvalidInput(
            f"task input is {len(data):,} bytes encoded, over the {max_payload:,}-byte limit"
        )
    if len(data) <= inline_limit:
        return NewTask(handler=ref, codec=codec, payload=data, timeout_s=timeout_s)
    key = new_blob_key(session_id, "input")
    blobs.put(key, data)
    return NewTask(handler=ref, codec=codec, payload=None, payload_ref=key, timeout_s=timeout_s)


def outcome(record: TaskRecord, blobs: BlobStore) -> tuple[bool, Any]:
    """(True, value) for a succeeded task, else (False, the exception to raise)."""
    if record.state is TaskState.SUCCEEDED:
        data = record.result if record.result_ref is None else blobs.get(record.result_ref)
        return True, codecs.decode(data or b"", record.codec)
    if record.state is TaskState.CANCELLED:
        return False, TaskCancelled(f"task {record.task_id} was cancelled")
    if record.state is TaskState.FAILED and record.error is not None:
        return False, remote_exception(record.task_id, record.error)
    return False, TaskError(record.task_id, "Unfinished", f"task is {record.state.label}", "")


def remote_exception(task_id: str, error: ErrorInfo) -> BaseException:
    """The task's own exception when it travelled pickled, else a :class:`TaskError`;
    either way with the remote traceback attached as its cause."""
    exc: BaseException | None = None
    if error.exception is not None:
        try:
            loaded = pickle.loads(error.exception)
        except Exception:
            loaded = None
        if isinstance(loaded, BaseException):
            exc = loaded
    if exc is None:
        exc = TaskError(task_id, error.type, error.message, error.traceback)
    if error.traceback:
        exc.__cause__ = RemoteTraceback(error.traceback)
    return exc
