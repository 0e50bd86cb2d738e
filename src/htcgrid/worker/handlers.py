"""Loading the code a task names, and describing how it failed. Runs in executor processes.

Handlers are cached by reference, so a session of a million tasks imports (or unpickles) its
function once per executor.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from htcgrid.core.handlers import HandlerKind, parse_handler
from htcgrid.core.model import Codec, ErrorInfo, FailureKind

Handler = Callable[[Any], Any]

#: How much of a failed command's standard error the task error keeps.
STDERR_TAIL_CHARS = 2000


class CommandFailed(Exception):
    """A command handler exited with a non-zero status."""


class HandlerNotDelivered(Exception):
    """A pickled handler's bytes did not reach the executor (a bug in the agent)."""


class HandlerLoader:
    """Resolves handler references to callables, once per reference."""

    def __init__(self) -> None:
        self._cache: dict[str, Handler] = {}
        self._pickled: dict[str, bytes] = {}

    def add_pickled(self, blobs: dict[str, bytes]) -> None:
        """Keep the bytes of pickled handlers until a task first uses them."""
        self._pickled.update(blobs)

    def load(self, ref: str) -> Handler:
        """The callable for ``ref``; raises whatever importing or unpickling raises."""
        fn = self._cache.get(ref)
        if fn is None:
            fn = self._cache[ref] = self._resolve(ref)
        return fn

    def _resolve(self, ref: str) -> Handler:
        parsed = parse_handler(ref)
        if parsed.kind is HandlerKind.IMPORT:
            return import_function(parsed.target)
        if parsed.kind is HandlerKind.PICKLE:
            data = self._pickled.pop(ref, None)
            if data is None:
                raise HandlerNotDelivered(f"the agent sent no bytes for handler {ref}")
            fn = cloudpickle.loads(data)
            if not callable(fn):
                raise TypeError(f"handler {ref} unpickled to a {type(fn).__name__}, not a callable")
            return fn  # type: ignore[no-any-return]
        argv = parsed.argv
        return lambda value: run_command(argv, value)


def import_function(target: str) -> Handler:
    """Import ``"pkg.module:qualname"`` and return the object it names."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"handler {target} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def run_command(argv: list[str], value: Any) -> str:
    """Run ``argv`` plus the task's arguments; return its standard output.

    A list (or tuple) input adds arguments; str or bytes input is fed to standard input.
    """
    args: list[str] = []
    stdin: bytes | None = None
    if isinstance(value, list | tuple):
        args = [str(a) for a in value]
    elif isinstance(value, str):
        stdin = value.encode()
    elif isinstance(value, bytes | bytearray):
        stdin = bytes(value)
    elif value is not None:
        raise TypeError(
            f"a command task takes a list of arguments (or str/bytes for stdin), "
            f"not {type(value).__name__}"
        )
    proc = subprocess.run([*argv, *args], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-STDERR_TAIL_CHARS:]
        status = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with code {proc.returncode}"
        )
        raise CommandFailed(f"command {argv[0]} {status}; stderr: {tail.strip()}")
    return proc.stdout.decode(errors="replace")


def type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Class`` otherwise."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def blob_error(doing: str, exc: BaseException) -> ErrorInfo:
    """The task's error when the blob store failed it: ``cannot <doing>: <what happened>``."""
    return ErrorInfo(kind=FailureKind.ERROR, type=type_name(exc), message=f"cannot {doing}: {exc}")


def error_info(exc: BaseException, codec: str) -> ErrorInfo:
    """Describe a handler's exception; pickle it too when the task speaks pickle."""
    pickled: bytes | None = None
    if codec == Codec.PICKLE.value:
        try:
            pickled = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(pickled)  # an exception that pickles but cannot load is no use
        except Exception:
            pickled = None
    return ErrorInfo(
        kind=FailureKind.ERROR,
        type=type_name(exc),
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        exception=pickled,
    )
