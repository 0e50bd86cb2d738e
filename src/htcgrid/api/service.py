"""What the API does, apart from HTTP: tenant checks, validation, one port call per request.

Every method is synchronous (the store's calls block) and is run off the event loop by the
routes. Nothing is kept between calls: several API processes on one store behave as one.

Ownership: a session belongs to the tenant that created it (``SessionSpec.tenant``). A tenant
asking for another's session gets the same NotFound as for an absent one, so ids don't leak
through the status code; an admin sees every session.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from htcgrid.api.auth import Principal
from htcgrid.api.wire import (
    CancelOut,
    Limits,
    SessionIn,
    SessionList,
    SubmitOut,
    TaskIn,
    TaskList,
    TaskOut,
    TaskPage,
)
from htcgrid.backends.base import ClientStore
from htcgrid.backends.blobs import blob_key, split_blob_key
from htcgrid.core.errors import InvalidInput, NotFound, PayloadTooLarge
from htcgrid.core.handlers import HandlerKind, parse_handler
from htcgrid.core.ids import check_session_id, new_session_id, split_task_id
from htcgrid.core.model import Counts, NewTask, SessionInfo, TaskRecord

#: Idempotency keys are stored with the batch: keep them short and printable.
MAX_KEY_CHARS = 200
#: Bytes of results and errors in one page of finished tasks, past the first record.
MAX_PAGE_BYTES = 16 * 1024 * 1024
#: The id a readiness probe asks the store for: any answer but an outage means ready.
_PROBE_ID = "htcgrid-readyz-probe"


class Service:
    """The API's operations over a :class:`ClientStore`, checked for the caller's tenant."""

    def __init__(
        self, store: ClientStore, limits: Limits, handler_kinds: frozenset[HandlerKind]
    ) -> None:
        self.store = store
        self.limits = limits
        self.handler_kinds = handler_kinds

    # -- sessions -------------------------------------------------------------------------
    def session(self, who: Principal, session_id: str) -> SessionInfo:
        """The session if ``who`` may see it; NotFound (never Forbidden) otherwise."""
        check_session_id(session_id)
        info = self.store.get_session(session_id)
        if not who.may_see(info.spec.tenant):
            raise NotFound(f"no session {session_id}")
        return info

    def create_session(self, who: Principal, body: SessionIn) -> SessionInfo:
        sid = body.session_id or new_session_id()
        return self.store.create_session(sid, body.spec(who.tenant), time.time())

    def list_sessions(self, who: Principal) -> SessionList:
        infos = self.store.list_sessions()
        return SessionList(sessions=[i for i in infos if who.may_see(i.spec.tenant)])

    def delete_session(self, who: Principal, session_id: str) -> None:
        self.session(who, session_id)
        self.store.delete_session(session_id)

    def counts(self, who: Principal, session_id: str) -> Counts:
        return self.session(who, session_id).counts

    # -- tasks ----------------------------------------------------------------------------
    def submit(
        self, who: Principal, session_id: str, tasks: Sequence[TaskIn], batch_key: str | None
    ) -> SubmitOut:
        """Validate the whole batch, then submit it in one port call: a rejected batch adds
        nothing, and a batch retried under the same key is not added twice."""
        if batch_key is not None and not (0 < len(batch_key) <= MAX_KEY_CHARS):
            raise InvalidInput(f"Idempotency-Key must be 1-{MAX_KEY_CHARS} characters")
        checked = self.check_tasks(session_id, tasks)
        self.session(who, session_id)
        ids = self.store.submit(session_id, checked, time.time(), batch_key=batch_key)
        return SubmitOut(task_ids=ids)

    def check_tasks(self, session_id: str, tasks: Sequence[TaskIn]) -> list[NewTask]:
        """Every task checked against the limits and the handler policy, or InvalidInput
        naming the first bad one."""
        if not tasks:
            raise InvalidInput("a batch needs at least one task in 'tasks'")
        if len(tasks) > self.limits.max_batch_tasks:
            raise PayloadTooLarge(
                f"a batch of {len(tasks):,} tasks is over the limit of "
                f"{self.limits.max_batch_tasks:,}: split it"
            )
        return [self._check_task(session_id, i, t) for i, t in enumerate(tasks)]

    def _check_task(self, session_id: str, i: int, task: TaskIn) -> NewTask:
        where = f"tasks[{i}]"
        try:
            ref = parse_handler(task.handler)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.handler: {exc}") from None
        if ref.kind not in self.handler_kinds:
            allowed = ", ".join(sorted(k.value for k in self.handler_kinds)) or "none"
            raise InvalidInput(f"{where}.handler: this API accepts {allowed} handlers only")
        if ref.kind is HandlerKind.PICKLE:
            self._check_blob(session_id, ref.target, f"{where}.handler")
        payload = task.payload
        if task.payload_ref is not None:
            if payload:
                raise InvalidInput(f"{where}: give payload or payload_ref, not both")
            self._check_blob(session_id, task.payload_ref, f"{where}.payload_ref")
            payload = None
        elif payload is None:
            raise InvalidInput(f"{where}: give payload (inline bytes) or payload_ref (a blob)")
        elif len(payload) > self.limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"{where}.payload is {len(payload):,} bytes, over the inline limit of "
                f"{self.limits.max_payload_bytes:,}: upload it as a blob and send payload_ref"
            )
        return NewTask(
            handler=task.handler,
            codec=task.codec,
            payload=payload,
            payload_ref=task.payload_ref,
            timeout_s=task.timeout_s,
        )

    @staticmethod
    def _check_blob(session_id: str, key: str, where: str) -> None:
        """A task may only name blobs of its own session: another's would hand its data (or
        its code) to this tenant's task."""
        try:
            owner, _ = split_blob_key(key)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        if owner != session_id:
            raise InvalidInput(f"{where}: blob {key!r} is not in session {session_id}")

    def cancel(self, who: Principal, session_id: str, task_ids: Sequence[str] | None) -> CancelOut:
        self.session(who, session_id)
        if task_ids is not None:
            self._check_task_ids(session_id, task_ids)
        return CancelOut(cancelled=self.store.cancel(session_id, task_ids, time.time()))

    def lookup(self, who: Principal, session_id: str, task_ids: Sequence[str]) -> TaskList:
        self.session(who, session_id)
        self._check_task_ids(session_id, task_ids)
        return TaskList(tasks=[TaskOut.of(r) for r in self.store.tasks(task_ids)])

    @staticmethod
    def _check_task_ids(session_id: str, task_ids: Sequence[str]) -> None:
        for tid in task_ids:
            if split_task_id(tid)[0] != session_id:
                raise InvalidInput(f"task {tid} is not in session {session_id}")

    def finished(self, who: Principal, session_id: str, after: int, limit: int) -> TaskPage:
        """A page of finished tasks past ``after``, cut short before MAX_PAGE_BYTES of results
        (at least one task), so a page of large inline results stays a sane response."""
        self.session(who, session_id)
        return self.page(session_id, after, limit)

    def page(self, session_id: str, after: int, limit: int) -> TaskPage:
        records = self.store.finished(session_id, after, limit)
        out: list[TaskOut] = []
        size = 0
        for r in records:
            size += _size(r)
            if out and size > MAX_PAGE_BYTES:
                break
            out.append(TaskOut.of(r))
        last = out[-1].done_seq if out else None
        return TaskPage(tasks=out, next_after=after if last is None else last)

    # -- blobs ----------------------------------------------------------------------------
    def put_blob(self, who: Principal, session_id: str, name: str, data: bytes) -> None:
        key = blob_key(session_id, name)
        self.session(who, session_id)
        self.store.blobs.put(key, data)

    def get_blob(self, who: Principal, session_id: str, name: str) -> bytes:
        key = blob_key(session_id, name)
        self.session(who, session_id)
        return self.store.blobs.get(key)

    # -- health ---------------------------------------------------------------------------
    def probe(self) -> None:
        """Raise (BackendUnavailable, typically) unless the store answers a read."""
        with contextlib.suppress(NotFound):
            self.store.get_session(_PROBE_ID)


def _size(r: TaskRecord) -> int:
    n = len(r.result or b"")
    if r.error is not None:
        n += len(r.error.traceback) + len(r.error.message) + len(r.error.exception or b"")
    return n
