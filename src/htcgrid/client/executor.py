"""A :class:`concurrent.futures.Executor` whose calls run as tasks of one grid session."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from htcgrid.client.session import Session
from htcgrid.codec import Args


class GridExecutor(concurrent.futures.Executor):
    """Drop-in Executor: ``submit`` and ``map`` become tasks of ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._is_shut = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        if self._is_shut:
            raise RuntimeError("cannot submit after shutdown")
        return self.session.submit(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like :meth:`Executor.map`, submitting in batches instead of one call per item."""
        if self._is_shut:
            raise RuntimeError("cannot map after shutdown")
        calls = (Args(tuple(a), {}) for a in zip(*iterables, strict=False))
        futures = []
        while batch := list(islice(calls, 2000)):
            futures.extend(self.session.submit_many(fn, batch))

        def results() -> Iterator[Any]:
            for f in futures:
                yield f.result(timeout=timeout)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._is_shut = True
        if cancel_futures:
            ids = self.session._collector.unresolved
            if ids:
                self.session.cancel(ids)
        if wait:
            self.session.wait()
        self.session.close()
