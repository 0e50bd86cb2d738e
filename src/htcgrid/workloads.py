"""Task handlers for benchmarks, demos and tests, importable by workers as
``htcgrid.workloads:<name>``.

They are the workloads of docs/benchmarks.md (no-op, CPU burn, payload echo) and a port of
HTC-Grid's mock computation, whose results carry a checksum so a client can verify each one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: Bytes in the "MB" of ``hold_mb`` and of the payload workload.
MB = 1024 * 1024
#: Stride at which held memory is written, so its pages are really resident.
_PAGE = 4096
#: The keys of a mock-computation task that change what it does.
MOCK_KEYS = ("sleep_ms", "burn_ms", "hold_mb")


def noop(x: T) -> T:
    """Return the input unchanged: the cost of a task is then all grid overhead."""
    return x


def burn_cpu_ms(ms: float) -> float:
    """Busy-loop ``ms`` milliseconds of this thread's CPU time in pure Python; return ``ms``."""
    _check_non_negative("ms", ms)
    deadline = time.thread_time() + ms / 1000.0
    while time.thread_time() < deadline:
        for _ in range(100):  # amortise the clock read over some pure-Python work
            pass
    return ms


def sleep_ms(ms: float) -> float:
    """Sleep ``ms`` milliseconds; return ``ms``."""
    _check_non_negative("ms", ms)
    time.sleep(ms / 1000.0)
    return ms


def echo_bytes(data: bytes) -> bytes:
    """Return fresh bytes of the same length as ``data`` (reversed), for payload round trips."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"echo_bytes takes bytes, not {type(data).__name__}")
    return bytes(data[::-1])


def hold_memory(mb: float) -> bytearray:
    """A buffer of ``mb`` MB with every page written, so it is resident, not just reserved."""
    _check_non_negative("hold_mb", mb)
    size = int(mb * MB)
    buf = bytearray(size)
    buf[::_PAGE] = b"\x01" * len(range(0, size, _PAGE))
    return buf


def mock_computation(task: Mapping[str, Any]) -> dict[str, Any]:
    """HTC-Grid's mock computation: hold ``hold_mb`` MB while burning ``burn_ms`` of CPU and
    sleeping ``sleep_ms`` (each optional, default 0); return the task echoed plus a
    ``checksum`` of its inputs (see :func:`expected_mock_result`)."""
    if not isinstance(task, Mapping):
        raise TypeError(f"mock_computation takes a dict, not {type(task).__name__}")
    values = {key: _number(task, key) for key in MOCK_KEYS}
    held = hold_memory(values["hold_mb"])
    try:
        burn_cpu_ms(values["burn_ms"])
        sleep_ms(values["sleep_ms"])
    finally:
        del held
    return expected_mock_result(task)


def expected_mock_result(task: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`mock_computation` returns for ``task``: the task plus ``checksum``, a
    64-bit integer derived from every key and value of the task."""
    return {**task, "checksum": mock_checksum(task)}


def mock_checksum(task: Mapping[str, Any]) -> int:
    """A deterministic 64-bit checksum of a task's keys and values (JSON, sorted keys)."""
    text = json.dumps(dict(task), sort_keys=True, separators=(",", ":"), default=repr)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _number(task: Mapping[str, Any], key: str) -> float:
    value = task.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} must be a number, not {type(value).__name__}")
    _check_non_negative(key, value)
    return float(value)


def _check_non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
