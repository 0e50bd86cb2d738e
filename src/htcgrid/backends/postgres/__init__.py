"""The PostgreSQL backend: a shared, durable grid store that every machine can reach.

Open it by URL, ``postgresql://user@host:5432/db?schema=NAME``; see docs/postgres.md.
"""

from htcgrid.backends.postgres.backend import PostgresBackend
from htcgrid.backends.postgres.blobs import PostgresBlobStore

__all__ = ["PostgresBackend", "PostgresBlobStore"]
