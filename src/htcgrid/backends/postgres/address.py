"""Where a PostgreSQL store lives: a libpq URL plus the schema that holds its tables."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from htcgrid.core.errors import InvalidInput

#: The schema of a store whose URL names none.
DEFAULT_SCHEMA = "htcgrid"
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_CHANNEL_BYTES = 63  # PostgreSQL identifiers, channel names included, stop there


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed store URL: what psycopg connects to and which schema holds the grid."""

    url: str  # as given: it reopens the same store from any process
    conninfo: str  # the URL without htcgrid's own options, for libpq
    schema: str

    @classmethod
    def parse(cls, url: str, full_url: str | None = None) -> Address:
        """Split ``postgresql://...?schema=NAME`` into a libpq URL and the schema name;
        ``full_url``, if given, is the URL as the user wrote it, with options of the store's
        other parts (``blobs=``) that ``url`` had taken off."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise InvalidInput(f"not a PostgreSQL URL: {url!r}")
        # keep libpq's options byte for byte: it reads '+' literally and only %-escapes
        options = [item for item in parts.query.split("&") if item]
        ours = [item for item in options if item.partition("=")[0] == "schema"]
        schemas = [unquote(item.partition("=")[2]) for item in ours]
        if len(schemas) > 1:
            raise InvalidInput(f"store URL {url!r} names more than one schema")
        schema = schemas[0] if schemas else DEFAULT_SCHEMA
        if not _SCHEMA_RE.fullmatch(schema):
            raise InvalidInput(
                f"malformed schema {schema!r} in {url!r}: use 1-63 letters, digits or '_', "
                "not starting with a digit"
            )
        rest = "&".join(item for item in options if item not in ours)
        conninfo = urlunsplit(parts._replace(query=rest))
        return cls(url=full_url or url, conninfo=conninfo, schema=schema)

    @property
    def quoted_schema(self) -> str:
        """The schema as an SQL identifier (safe to splice: the name was validated)."""
        return f'"{self.schema}"'

    def channel(self, kind: str) -> str:
        """The LISTEN/NOTIFY channel for ``kind`` events of this store only."""
        name = f"htcgrid_{self.schema}_{kind}"
        if len(name.encode()) > _MAX_CHANNEL_BYTES:
            digest = hashlib.sha256(self.schema.encode()).hexdigest()[:24]
            name = f"htcgrid_{digest}_{kind}"
        return name
