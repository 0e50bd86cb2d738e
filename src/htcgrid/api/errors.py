"""The one table from the grid's error families to HTTP status codes, used both ways.

The server answers a :class:`~htcgrid.core.errors.GridError` with the status of its family
and a body ``{"error": "<class name>", "message": "..."}``; the remote client turns that body
back into the same class, so callers catch the same exceptions on either side of the wire.
"""

from __future__ import annotations

import msgspec

from htcgrid.api.wire import ErrorOut
from htcgrid.core.errors import (
    BackendUnavailable,
    GridError,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    Refused,
    Unauthorized,
)

#: Error family -> status. Subclasses come before their parents (PayloadTooLarge is an
#: InvalidInput); a GridError of no listed family is a 400.
STATUS: dict[type[GridError], int] = {
    PayloadTooLarge: 413,
    InvalidInput: 422,
    NotFound: 404,
    Unauthorized: 401,
    Refused: 403,
    InvalidTransition: 409,
    LeaseLost: 409,
    BackendUnavailable: 503,
}
#: Statuses a proxy or load balancer answers while the API behind it is down or restarting.
TRANSIENT_STATUS = frozenset({502, 503, 504})

_BY_NAME: dict[str, type[GridError]] = {cls.__name__: cls for cls in (*STATUS, GridError)}
_BY_STATUS: dict[int, type[GridError]] = {}
for _cls, _status in STATUS.items():
    _BY_STATUS.setdefault(_status, _cls)
_BY_STATUS[400] = InvalidInput
_BY_STATUS[413] = PayloadTooLarge


def status_of(exc: GridError) -> int:
    """The HTTP status for ``exc``: its nearest family in :data:`STATUS`, else 400."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(exc: GridError) -> ErrorOut:
    """The body sent for ``exc``: the family's class name and the message."""
    name = next(
        (cls.__name__ for cls in type(exc).__mro__ if cls in _BY_NAME.values()), "GridError"
    )
    return ErrorOut(error=name, message=str(exc))


def error_from(status: int, content: bytes) -> GridError:
    """The exception a client raises for an error response: the class the body names, else
    the family of the status (a 5xx from a proxy is :class:`BackendUnavailable`)."""
    try:
        body = msgspec.json.decode(content, type=ErrorOut)
    except msgspec.DecodeError:
        text = content[:200].decode(errors="replace").strip() or "no message"
        body = ErrorOut(error="", message=f"HTTP {status}: {text}")
    cls = _BY_NAME.get(body.error) or _BY_STATUS.get(status)
    if cls is None:
        cls = BackendUnavailable if status in TRANSIENT_STATUS else GridError
    return cls(body.message)
