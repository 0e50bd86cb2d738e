"""Blocking waits return soon after the awaited change and no later than their timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from htcgrid.backends.base import Backend

from .helpers import T0, TTL, new_tasks, open_session, succeed

PROMPT_S = 2.0  # far below the waits' timeouts, far above any scheduling hiccup


def _later(delay_s: float, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` on another thread (so with another connection) after ``delay_s``."""

    def run() -> None:
        time.sleep(delay_s)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _timed(call: Callable[[], None]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def test_wait_for_work_returns_at_once_when_work_is_there(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    assert _timed(lambda: backend.wait_for_work(30.0)) < PROMPT_S


def test_work_whose_wake_up_was_used_is_still_found(backend: Backend) -> None:
    """At once by the wait where ``capabilities.wait_sees_work`` says so (workers then wait
    before claiming), and by a claim everywhere (workers of other stores claim first)."""
    open_session(backend, "s", n=1)
    backend.wait_for_work(30.0)  # takes whatever wake-up the submit left
    if backend.capabilities.wait_sees_work:
        assert _timed(lambda: backend.wait_for_work(30.0)) < PROMPT_S
    assert len(backend.claim("w", 1, TTL, time.time())) == 1


def test_wait_for_work_wakes_on_a_submit(backend: Backend) -> None:
    open_session(backend, "s")
    thread = _later(0.05, lambda: backend.submit("s", new_tasks(1), time.time()))
    assert _timed(lambda: backend.wait_for_work(30.0)) < PROMPT_S
    thread.join()
    assert len(backend.claim("w", 1, TTL, time.time())) == 1


def test_wait_for_work_gives_up_at_its_timeout(backend: Backend) -> None:
    open_session(backend, "s")
    assert _timed(lambda: backend.wait_for_work(0.05)) < PROMPT_S


def test_wait_for_finished_returns_at_once_when_past_after(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    [c] = backend.claim("w", 1, TTL, T0)
    backend.complete([succeed(c)], T0)
    assert _timed(lambda: backend.wait_for_finished("s", 0, 30.0)) < PROMPT_S


def test_wait_for_finished_wakes_on_a_completion(backend: Backend) -> None:
    open_session(backend, "s", n=2)
    a, b = backend.claim("w", 2, TTL, T0)
    backend.complete([succeed(a)], T0)
    thread = _later(0.05, lambda: backend.complete([succeed(b)], T0))
    assert _timed(lambda: backend.wait_for_finished("s", 1, 30.0)) < PROMPT_S
    thread.join()
    assert len(backend.finished("s", 1, 10)) == 1


def test_wait_for_finished_wakes_on_a_cancel(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    thread = _later(0.05, lambda: backend.cancel("s", None, T0))
    assert _timed(lambda: backend.wait_for_finished("s", 0, 30.0)) < PROMPT_S
    thread.join()


def test_wait_for_finished_gives_up_at_its_timeout(backend: Backend) -> None:
    open_session(backend, "s", n=1)
    assert _timed(lambda: backend.wait_for_finished("s", 0, 0.05)) < PROMPT_S
