"""Handler references: how a task names the code that runs it.

Three kinds, each a short string stored with the task:

- ``import:pkg.module:function`` -- a function importable on the worker.
- ``pickle:<blob key>`` -- a function shipped by the client, cloudpickled into the blob store.
- ``command:<json argv>`` -- an executable; the task input adds arguments, stdout is the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from htcgrid.core.errors import InvalidInput

_IMPORT_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class HandlerKind(StrEnum):
    IMPORT = "import"
    PICKLE = "pickle"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class HandlerRef:
    """A parsed handler reference."""

    kind: HandlerKind
    target: str  # "pkg.module:function", a blob key, or a JSON argv list

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.target}"

    @property
    def argv(self) -> list[str]:
        """The command line of a command handler."""
        argv: list[str] = json.loads(self.target)
        return argv


def import_handler(path: str) -> str:
    """Reference to an importable function, ``"pkg.module:function"``."""
    if not _IMPORT_RE.fullmatch(path):
        raise InvalidInput(f"malformed handler {path!r}: expected 'package.module:function'")
    return f"{HandlerKind.IMPORT.value}:{path}"


def command_handler(argv: list[str]) -> str:
    """Reference to an executable run with ``argv`` plus the task's arguments."""
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise InvalidInput("a command handler needs a non-empty list of non-empty strings")
    return f"{HandlerKind.COMMAND.value}:{json.dumps(argv)}"


def pickle_handler(blob_key: str) -> str:
    """Reference to a cloudpickled function stored under ``blob_key``."""
    return f"{HandlerKind.PICKLE.value}:{blob_key}"


def parse_handler(ref: str) -> HandlerRef:
    """Parse a stored reference; raise :class:`InvalidInput` with what to fix if malformed."""
    kind_text, sep, target = ref.partition(":")
    try:
        kind = HandlerKind(kind_text)
    except ValueError:
        kinds = ", ".join(k.value for k in HandlerKind)
        raise InvalidInput(
            f"malformed handler reference {ref!r}: it must start with one of {kinds} and ':'"
        ) from None
    if not sep or not target:
        raise InvalidInput(f"malformed handler reference {ref!r}: nothing after '{kind_text}:'")
    if kind is HandlerKind.IMPORT and not _IMPORT_RE.fullmatch(target):
        raise InvalidInput(f"malformed handler {target!r}: expected 'package.module:function'")
    if kind is HandlerKind.COMMAND:
        try:
            argv = json.loads(target)
        except ValueError:
            raise InvalidInput(f"malformed command handler {target!r}: not a JSON list") from None
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and a for a in argv)
        ):
            raise InvalidInput(
                f"malformed command handler {target!r}: not a list of non-empty strings"
            )
    return HandlerRef(kind, target)
