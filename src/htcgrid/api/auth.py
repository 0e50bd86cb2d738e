"""Bearer tokens mapped to tenants, kept only as SHA-256 hashes in a TOML file.

A tokens file holds one table per token::

    [[tokens]]
    tenant = "desk-a"
    role = "user"            # or "admin": sees and acts on every tenant's sessions
    sha256 = "9f86d08..."    # hex of sha256(token); the token itself is never stored

``htcgrid token create`` makes a token, prints it once and appends its hash. The file is
re-read when it changes, so a new token works without restarting the API processes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from htcgrid.core.errors import InvalidInput

#: Environment variable naming the tokens file when no ``--tokens`` is given.
TOKENS_ENV = "HTCGRID_API_TOKENS"
_TENANT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_KEYS = frozenset({"tenant", "role", "sha256"})
#: How often a served tokens file is checked for changes.
_RECHECK_S = 1.0


class Role(StrEnum):
    USER = "user"  # its own sessions only
    ADMIN = "admin"  # every session


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a tenant, with a role."""

    tenant: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, owner: str) -> bool:
        """True when this principal may act on a session owned by ``owner``."""
        return self.is_admin or owner == self.tenant


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: Principal
    digest: bytes  # sha256 of the token


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The accepted tokens. :meth:`authenticate` compares a presented token's hash with every
    entry in constant time, so timing says nothing about which hashes exist."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self.entries = tuple(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def authenticate(self, token: str) -> Principal | None:
        presented = digest(token)
        found: Principal | None = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry.principal
        return found

    @classmethod
    def of(cls, tokens: dict[str, tuple[str, Role]]) -> TokenTable:
        """A table from plain tokens (tests, embedding): ``{token: (tenant, role)}``."""
        return cls([TokenEntry(Principal(t, r), digest(tok)) for tok, (t, r) in tokens.items()])


def parse_tokens(text: str, where: str) -> TokenTable:
    """Parse a tokens file; InvalidInput saying which entry is wrong and how."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{where}: not valid TOML: {exc}") from None
    extra = set(data) - {"tokens"}
    if extra:
        raise InvalidInput(f"{where}: unknown key(s) {sorted(extra)}: only [[tokens]] tables")
    raw = data.get("tokens", [])
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: 'tokens' must be an array of tables ([[tokens]])")
    entries = []
    for n, item in enumerate(raw, start=1):
        entries.append(_entry(item, f"{where}: token {n}"))
    return TokenTable(entries)


def _entry(item: object, where: str) -> TokenEntry:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} is not a table")
    unknown = set(item) - _KEYS
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_KEYS)}")
    tenant, role, hexdigest = item.get("tenant"), item.get("role", "user"), item.get("sha256")
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise InvalidInput(f"{where}: tenant must be 1-64 of [A-Za-z0-9_.-], not {tenant!r}")
    try:
        parsed_role = Role(role)
    except ValueError:
        raise InvalidInput(f"{where}: role must be 'user' or 'admin', not {role!r}") from None
    if not isinstance(hexdigest, str) or not _HEX_RE.fullmatch(hexdigest):
        raise InvalidInput(f"{where}: sha256 must be 64 lower-case hex digits")
    return TokenEntry(Principal(tenant, parsed_role), bytes.fromhex(hexdigest))


def load_tokens(path: Path) -> TokenTable:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read tokens file {path}: {exc.strerror}") from None
    return parse_tokens(text, str(path))


class TokenFile:
    """A tokens file, re-read when its modification time or size changes (checked at most
    once a second), so tokens added by ``htcgrid token create`` work at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._table = load_tokens(path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def table(self) -> TokenTable:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= _RECHECK_S:
                self._checked = now
                try:
                    stamp = self._stat()
                    if stamp != self._stamp:
                        self._table, self._stamp = load_tokens(self.path), stamp
                except (OSError, InvalidInput):
                    pass  # keep serving the last good table; a half-written file is not fatal
            return self._table


def new_token() -> str:
    """A fresh random token: 256 bits, URL-safe, prefixed so it is recognisable in a leak."""
    return "htc_" + secrets.token_urlsafe(32)


def create_token(path: Path, tenant: str, role: Role = Role.USER) -> str:
    """Append a new token's hash for ``tenant`` to ``path`` (created 0600); return the token,
    which is not stored anywhere and cannot be recovered."""
    if not _TENANT_RE.fullmatch(tenant):
        raise InvalidInput(f"tenant must be 1-64 of [A-Za-z0-9_.-], not {tenant!r}")
    if path.exists():
        load_tokens(path)  # refuse to append to a file we could not read back
    token = new_token()
    block = (
        f'\n[[tokens]]\ntenant = "{tenant}"\nrole = "{role.value}"\n'
        f'sha256 = "{digest(token).hex()}"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(block)
    return token
