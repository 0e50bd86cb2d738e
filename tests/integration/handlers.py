"""Handlers the integration tests run on real workers (``tests.integration.handlers``)."""

from __future__ import annotations

import time


class PricingError(Exception):
    """A user exception with a custom constructor, to check it travels back intact."""

    def __init__(self, trade: str, reason: str) -> None:
        super().__init__(f"{trade}: {reason}")
        self.trade = trade
        self.reason = reason

    def __reduce__(self) -> tuple[type[PricingError], tuple[str, str]]:
        return PricingError, (self.trade, self.reason)


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def fail_pricing(trade: str) -> None:
    raise PricingError(trade, "negative volatility")


def sleep_s(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def echo(data: bytes) -> bytes:
    return data
