"""The store's tables, created and migrated by the grid itself.

``MIGRATIONS[i]`` takes a schema from version ``i`` to ``i + 1``. Opening a store applies the
missing ones in one transaction under an advisory lock, so processes that open a new store at
the same moment do not race, and refuses a store newer than this code. ``{s}`` stands for the
quoted schema name.

Layout, and why (docs/postgres.md shows the plans):

- ``sessions`` carries the exact per-state counters, the next task index and the last
  ``done_seq``; every transaction that moves tasks of a session locks its row first and
  updates the counters before it commits. Its only index over changing data tests the
  generated ``has_pending`` flag, which flips only when ``n_pending`` crosses zero, so the
  counter updates stay HOT (no index writes) and ``fillfactor`` leaves room for them.
- ``tasks`` is keyed ``(sid << 32) | index``: a session's tasks are one key range in
  submission order, and a batch of tasks is found with ``key = ANY(array)`` on the primary
  key. A session's pending tasks are of two kinds, each found without passing over claimed
  ones: those never attempted all sit at or above ``sessions.fresh_from`` (claims take them
  in order and move it up), so they are a primary-key range; retries are in the small
  partial index ``tasks_retrying`` (per session, in index order, with ``not_before``). Two
  more partial indexes: running tasks by lease expiry (reap), finished tasks per session by
  ``done_seq`` (results).
- ``batches`` remembers submitted batch keys per session (idempotent submit).
- ``blobs`` holds payloads and results too large to keep inline.
"""

from __future__ import annotations

from htcgrid.core.errors import BackendUnavailable

from .connections import Conn

_V1 = (
    """CREATE TABLE {s}.sessions (
        sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
        session_id text NOT NULL UNIQUE,
        priority integer NOT NULL,
        created_at double precision NOT NULL,
        last_served double precision NOT NULL DEFAULT 0,
        next_index bigint NOT NULL DEFAULT 0,
        fresh_from bigint NOT NULL DEFAULT 0,  -- no task below it was never attempted
        fresh_holes bigint NOT NULL DEFAULT 0,  -- cancelled never-attempted tasks above it
        last_done_seq bigint NOT NULL DEFAULT 0,
        n_pending bigint NOT NULL DEFAULT 0,
        n_running bigint NOT NULL DEFAULT 0,
        n_succeeded bigint NOT NULL DEFAULT 0,
        n_failed bigint NOT NULL DEFAULT 0,
        n_cancelled bigint NOT NULL DEFAULT 0,
        is_cancelled boolean NOT NULL DEFAULT false,
        has_pending boolean GENERATED ALWAYS AS (n_pending > 0) STORED,
        spec bytea NOT NULL  -- the SessionSpec, msgpack
    ) WITH (fillfactor = 50)""",
    "CREATE INDEX sessions_pending ON {s}.sessions (sid) WHERE has_pending",
    # fixed-width columns first (no alignment padding), big values last
    """CREATE TABLE {s}.tasks (
        key bigint PRIMARY KEY,  -- (sid << 32) | index: a session's tasks in submission order
        sid bigint NOT NULL,
        not_before double precision NOT NULL DEFAULT 0,
        lease_expiry double precision,
        submitted_at double precision NOT NULL,
        finished_at double precision,
        done_seq bigint,  -- position in the session's stream of finished tasks
        timeout_s double precision,
        attempt integer NOT NULL DEFAULT 0,
        n_errors integer NOT NULL DEFAULT 0,
        n_timeouts integer NOT NULL DEFAULT 0,
        n_lost integer NOT NULL DEFAULT 0,
        state smallint NOT NULL DEFAULT 0,  -- htcgrid.core.states.TaskState
        codec text NOT NULL,
        worker_id text,
        handler text NOT NULL,
        payload_ref text,
        result_ref text,
        error bytea,  -- the ErrorInfo, msgpack
        result bytea,
        payload bytea
    )""",
    # pending tasks that were attempted before: the retries, in index order, with their delay
    """CREATE INDEX tasks_retrying ON {s}.tasks (sid, key, not_before)
        WHERE state = 0 AND attempt > 0""",
    "CREATE INDEX tasks_running ON {s}.tasks (lease_expiry) WHERE state = 1",
    "CREATE INDEX tasks_finished ON {s}.tasks (sid, done_seq) WHERE done_seq IS NOT NULL",
    """CREATE TABLE {s}.batches (
        sid bigint NOT NULL,
        batch_key text NOT NULL,
        first_index bigint NOT NULL,
        count integer NOT NULL,
        PRIMARY KEY (sid, batch_key)
    )""",
    """CREATE TABLE {s}.blobs (
        key text PRIMARY KEY,
        session_id text NOT NULL,
        data bytea NOT NULL
    )""",
    # blobs are mostly pickles and arrays that do not compress: store them out of line as is
    "ALTER TABLE {s}.blobs ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE INDEX blobs_session ON {s}.blobs (session_id)",
)

#: Ordered migrations; the schema version is how many of them were applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def current_version(conn: Conn, schema_q: str) -> int:
    """The schema version of the store, 0 when it has no tables yet."""
    row = conn.execute("SELECT to_regclass(%s)", [f"{schema_q}.schema_version"]).fetchone()
    if row is None or row[0] is None:
        return 0
    (version,) = conn.execute(
        f"SELECT coalesce(max(version), 0) FROM {schema_q}.schema_version"
    ).fetchone() or (0,)
    return int(version)


def migrate(conn: Conn, schema: str, schema_q: str, shown_url: str) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, in the transaction ``conn`` is in.

    The advisory lock serializes processes opening the same store; each re-reads the version
    once it holds the lock, so only the first one creates anything.
    """
    version = current_version(conn, schema_q)
    if version == SCHEMA_VERSION:
        return  # the usual case: no lock taken
    _refuse_newer(version, shown_url)
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"htcgrid.migrate.{schema}"]
    )
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_q}")
    conn.execute(_VERSION_TABLE.replace("{s}", schema_q))
    version = current_version(conn, schema_q)
    _refuse_newer(version, shown_url)
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            conn.execute(statement.replace("{s}", schema_q))
        conn.execute(f"INSERT INTO {schema_q}.schema_version (version) VALUES (%s)", [number])


def _refuse_newer(version: int, shown_url: str) -> None:
    if version > SCHEMA_VERSION:
        raise BackendUnavailable(
            f"the store {shown_url} has schema version {version}; this htcgrid knows versions "
            f"up to {SCHEMA_VERSION}: upgrade htcgrid to use it"
        )
