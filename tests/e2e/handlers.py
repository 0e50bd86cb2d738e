"""Task handlers for the worker tests, imported by executors as ``import:handlers:<name>``."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any


def echo(x: Any) -> Any:
    return x


def square(x: int) -> int:
    return x * x


def record(x: Any) -> Any:
    """Append ``x`` to the file named by $HTCGRID_TEST_RECORD, then return it."""
    with open(os.environ["HTCGRID_TEST_RECORD"], "a") as f:
        f.write(f"{x}\n")
    return x


def record_then_sleep(x: Any) -> Any:
    """Record the start of the attempt, sleep ``x`` seconds, record its end."""
    record(f"start {x}")
    time.sleep(float(x))
    record(f"end {x}")
    return x


def sleep(x: float) -> float:
    time.sleep(x)
    return x


class Boom(ValueError):
    """A handler's own exception type."""


def boom(x: Any) -> Any:
    raise Boom(f"boom {x}")


def segfault(x: Any) -> Any:
    return ctypes.string_at(0)


def hard_exit(x: Any) -> Any:
    os._exit(3)


def write_then_exit(path: str) -> Any:
    """Leave a file where the attempt's result blob goes, then die, as an executor killed
    between storing its result and reporting it would."""
    with open(path, "wb") as f:
        f.write(b"a result nobody was told of")
    os._exit(3)


def write_then_sleep(path: str) -> Any:
    """Leave a file where the attempt's result blob goes, then run on until killed."""
    with open(path, "wb") as f:
        f.write(b"a result its attempt never reported")
    record("written")
    time.sleep(60)


def fork_then_exit(x: Any) -> Any:
    """Leave a child holding every descriptor the executor had (its socket too) and record
    its pid, then exit: the agent must see the exit although the socket stays open."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    record(f"child {child}")
    os._exit(3)


def hog_memory(mb: int) -> int:
    """Allocate ``mb`` megabytes and touch them."""
    block = bytearray(mb * 1024 * 1024)
    return len(block)


def big_result(n: int) -> bytes:
    return b"x" * n


def big_result_after(seconds: float) -> bytes:
    """100 KB, too large to travel inline, after ``seconds``."""
    time.sleep(seconds)
    return b"y" * 100_000
