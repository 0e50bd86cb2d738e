"""Encoding task inputs and results: round trips per codec, and what each refuses."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from htcgrid.codec import Args, call, decode, encode
from htcgrid.core.errors import InvalidInput
from htcgrid.core.model import Codec


def double(x: int) -> int:
    return 2 * x


class Point:
    """A plain class: picklable by reference, not a msgpack value."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def _type_name(value: Any) -> str:
    return type(value).__name__


PICKLE_VALUES = [
    None,
    True,
    0,
    -(2**100),
    1.5,
    complex(1, -2),
    "ünïcode",
    b"\x00\xff",
    bytearray(b"ab"),
    (1, "a", None),
    [1, [2, [3]]],
    {"a": (1, 2), 3: {4.5}},
    frozenset({1, 2}),
    Decimal("1.10"),
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    Point(3),
    Args((1, 2), {"k": "v"}),
    double,
]

MSGPACK_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    float("inf"),
    "",
    "ünïcode",
    b"",
    b"\x00\xff",
    [],
    [1, [2, "x"], None],
    {},
    {"a": [1, 2], "b": {"c": None, "d": b"z"}},
]


@pytest.mark.parametrize("value", PICKLE_VALUES, ids=_type_name)
def test_pickle_round_trip(value: Any) -> None:
    data = encode(value, Codec.PICKLE)
    assert isinstance(data, bytes)
    assert decode(data, Codec.PICKLE) == value


@pytest.mark.parametrize("value", MSGPACK_VALUES, ids=_type_name)
def test_msgpack_round_trip(value: Any) -> None:
    data = encode(value, Codec.MSGPACK)
    assert isinstance(data, bytes)
    assert decode(data, Codec.MSGPACK) == value


@pytest.mark.parametrize(
    ("value", "decoded"),
    [((1, 2), [1, 2]), ({"t": (1, (2,))}, {"t": [1, [2]]}), ({1: "a"}, {1: "a"})],
    ids=_type_name,
)
def test_msgpack_is_language_neutral(value: Any, decoded: Any) -> None:
    # tuples come back as lists: msgpack has arrays, not Python types
    assert decode(encode(value, Codec.MSGPACK), Codec.MSGPACK) == decoded


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (b"", b""),
        (b"\x00\xff raw", b"\x00\xff raw"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"mv"), b"mv"),
        ("héllo", "héllo".encode()),  # text goes out as UTF-8; it comes back as bytes
    ],
    ids=_type_name,
)
def test_raw_passes_bytes_through(value: Any, data: bytes) -> None:
    encoded = encode(value, Codec.RAW)
    assert type(encoded) is bytes
    assert encoded == data
    assert decode(encoded, Codec.RAW) == data


@pytest.mark.parametrize(
    ("value", "codec", "message"),
    [
        (threading.Lock(), Codec.PICKLE, "cannot pickle lock"),
        ({"lock": threading.Lock()}, Codec.PICKLE, "cannot pickle dict"),
        ((x for x in [1]), Codec.PICKLE, "cannot pickle generator"),
        (object(), Codec.MSGPACK, "cannot encode object as msgpack"),
        (Point(1), Codec.MSGPACK, "cannot encode Point as msgpack"),
        ({"p": Point(1)}, Codec.MSGPACK, "cannot encode dict as msgpack"),
        (double, Codec.MSGPACK, "cannot encode function as msgpack"),
        (threading.Lock(), Codec.MSGPACK, "cannot encode lock as msgpack"),
        (1, Codec.RAW, "the raw codec takes bytes or str, not int"),
        (None, Codec.RAW, "the raw codec takes bytes or str, not NoneType"),
        ([b"x"], Codec.RAW, "the raw codec takes bytes or str, not list"),
    ],
    ids=_type_name,
)
def test_unencodable_values_are_invalid_input(value: Any, codec: Codec, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        encode(value, codec)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [2**70]], ids=_type_name)
def test_msgpack_out_of_range_int_is_invalid_input(value: Any) -> None:
    with pytest.raises(InvalidInput, match="msgpack"):
        encode(value, Codec.MSGPACK)


def _closure(n: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + n

    return add


@pytest.mark.parametrize(
    ("fn", "arg", "result"),
    [
        (lambda x: x * 2, 21, 42),
        (_closure(10), 5, 15),
        (lambda x, k=3: [x] * k, "a", ["a", "a", "a"]),
        (double, 4, 8),
    ],
)
def test_functions_and_lambdas_round_trip_with_pickle(
    fn: Callable[[Any], Any], arg: Any, result: Any
) -> None:
    restored = decode(encode(fn, Codec.PICKLE), Codec.PICKLE)
    assert restored(arg) == result


def test_a_lambda_inside_a_value_round_trips() -> None:
    value = {"fns": [lambda: "hi", _closure(1)], "n": 2}
    restored = decode(encode(value, Codec.PICKLE), Codec.PICKLE)
    assert restored["fns"][0]() == "hi"
    assert restored["fns"][1](1) == 2
    assert restored["n"] == 2


def test_args_round_trip_and_spread() -> None:
    def handler(a: int, b: int, *, k: int = 0) -> int:
        return a * 100 + b * 10 + k

    value = decode(encode(Args((1, 2), {"k": 3}), Codec.PICKLE), Codec.PICKLE)
    assert isinstance(value, Args)
    assert call(handler, value) == 123


@pytest.mark.parametrize("value", [(1, 2), [1, 2], {"k": 1}, None], ids=_type_name)
def test_call_passes_other_values_whole(value: Any) -> None:
    assert call(lambda v: v, value) == value
