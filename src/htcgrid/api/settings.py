"""Everything an API process is built from: no globals, no configuration read behind its back.

:func:`htcgrid.api.create_app` takes an :class:`ApiSettings`; ``htcgrid api`` builds one from
its flags (and, for ``--workers N`` uvicorn processes, from the environment it hands them, see
:mod:`htcgrid.api.serve`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from htcgrid.api.auth import TokenFile, TokenTable
from htcgrid.api.wire import Limits
from htcgrid.backends.base import ClientStore
from htcgrid.core.errors import InvalidInput
from htcgrid.core.handlers import HandlerKind


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """One API process: its store, its tokens, its limits.

    Give ``store_url`` to let the app open (and close) the store itself, or ``backend`` to
    serve a store the caller owns (tests, an embedded grid serving its own store).
    """

    tokens: TokenTable | TokenFile
    store_url: str | None = None
    backend: ClientStore | None = None
    limits: Limits = field(default_factory=Limits)
    #: handler kinds tenants may submit; drop "pickle" and "command" to allow only importable
    #: functions (workers run what tenants send: this is the API's say in it)
    handler_kinds: frozenset[HandlerKind] = frozenset(HandlerKind)
    #: threads running store calls at once, besides long-polls (limits.max_waiters)
    store_threads: int = 64
    #: a prefix the reverse proxy strips (``/grid``), so the OpenAPI document names it
    root_path: str = ""

    def __post_init__(self) -> None:
        if (self.store_url is None) == (self.backend is None):
            raise InvalidInput("give exactly one of store_url or backend")
        if self.store_threads < 1 or self.limits.max_waiters < 1:
            raise InvalidInput("store_threads and limits.max_waiters must be at least 1")

    def token_table(self) -> TokenTable:
        """The tokens in force now (a :class:`TokenFile` re-reads its file when it changes)."""
        return self.tokens.table() if isinstance(self.tokens, TokenFile) else self.tokens
