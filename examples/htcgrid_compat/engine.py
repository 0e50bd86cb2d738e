"""A stand-in for HTC-Grid's ``mock_compute_engine`` as a Python handler.

HTC-Grid's example tasks are ``{"worker_arguments": ["<delay ms>", "<ram GB>", "<iterations
millions>"]}``; its engine sleeps the delay and prints it. This handler does the same and
returns the delay as text, which the connector hands back as the task's output unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def lambda_handler(event: Mapping[str, Any], context: object = None) -> str:
    """Sleep ``worker_arguments[0]`` milliseconds; return that number as text."""
    arguments = event["worker_arguments"]
    delay_ms = int(arguments[0])
    if delay_ms < 0:
        raise ValueError(f"the delay must be >= 0 ms, not {delay_ms}")
    time.sleep(delay_ms / 1000)
    return str(delay_ms)
