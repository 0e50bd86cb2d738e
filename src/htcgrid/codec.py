"""Encoding of task inputs and results: one compact encoding per task, chosen by its codec."""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import cloudpickle
import msgspec

from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import Codec


class Args(NamedTuple):
    """A task input that calls the handler as ``handler(*args, **kwargs)`` instead of
    ``handler(value)``; what ``Executor.submit(fn, a, b, k=v)`` sends."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder()


def encode(value: Any, codec: Codec) -> bytes:
    """Encode ``value``; raise :class:`InvalidInput` saying why when it cannot be encoded."""
    if codec is Codec.PICKLE:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            # lambdas, closures and classes defined in __main__ need cloudpickle
            try:
                data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise InvalidInput(f"cannot pickle {type(value).__name__}: {exc}") from exc
            return data
    if codec is Codec.MSGPACK:
        try:
            return _msgpack_encoder.encode(value)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise InvalidInput(f"cannot encode {type(value).__name__} as msgpack: {exc}") from exc
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise InvalidInput(f"the raw codec takes bytes or str, not {type(value).__name__}")


def decode(data: bytes, codec: Codec) -> Any:
    """Decode bytes written by :func:`encode` with the same codec."""
    if codec is Codec.PICKLE:
        return pickle.loads(data)
    if codec is Codec.MSGPACK:
        return _msgpack_decoder.decode(data)
    return data


def call(handler: Any, value: Any) -> Any:
    """Call a handler with a decoded task input, spreading :class:`Args` when given."""
    if isinstance(value, Args):
        return handler(*value.args, **value.kwargs)
    return handler(value)
