"""Every statement the PostgreSQL backend sends, each one round trip however many tasks it
touches: batches travel as binary arrays and are expanded with ``unnest``.

Two rules keep the plans right at any table size and with stale statistics:

- tasks named by id are reached with ``key = ANY(array)`` on the primary key, never by
  joining an ``unnest`` (whose row count the planner can only guess);
- a statement that reaches tasks by key does not also test their state at the same level:
  ``state = 1`` would offer the planner the running-tasks index, a disaster whenever the
  statistics say few tasks run. Fences are checked on rows already locked, in Python or in an
  outer query, and rows locked earlier in the statement are updated by ``ctid``.

``{s}`` stands for the quoted schema; :meth:`Sql.bound` fills it in once per store. States are
the integers of :class:`htcgrid.core.states.TaskState`: 0 pending, 1 running, 4 cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

SESSION_COLUMNS = (
    "session_id, spec, created_at, is_cancelled, "
    "n_pending, n_running, n_succeeded, n_failed, n_cancelled"
)
RECORD_COLUMNS = (
    "key, state, codec, attempt, n_errors, n_timeouts, n_lost, submitted_at, finished_at, "
    "result, result_ref, error, done_seq"
)
INDEX_MASK = 0xFFFFFFFF  # key & INDEX_MASK is the task's index in its session

# Per-session counter deltas and the new last done_seq of a cancel with task ids.
_COUNTS = """
    UPDATE {s}.sessions AS s
    SET n_pending = s.n_pending + d.pending, n_running = s.n_running + d.running,
        n_succeeded = s.n_succeeded + d.succeeded, n_failed = s.n_failed + d.failed,
        n_cancelled = s.n_cancelled + d.cancelled, last_done_seq = d.last_done_seq,
        fresh_holes = s.fresh_holes + d.fresh_holes
    FROM unnest(%(d_sids)b::bigint[], %(d_pending)b::bigint[], %(d_running)b::bigint[],
                %(d_succeeded)b::bigint[], %(d_failed)b::bigint[], %(d_cancelled)b::bigint[],
                %(d_last_done_seq)b::bigint[], %(d_fresh_holes)b::bigint[])
        AS d(sid, pending, running, succeeded, failed, cancelled, last_done_seq, fresh_holes)
    WHERE s.sid = d.sid"""

# Wake-ups, delivered at commit: who waits for these sessions' results, and idle workers when
# a retry went back to pending.
_NOTIFY = """
    SELECT pg_notify(%(finished_channel)s, x) FROM unnest(%(finished)b::text[]) AS x
    UNION ALL SELECT pg_notify(%(work_channel)s, '') WHERE %(has_retry)s"""

# The keys of tasks named by (session id, index), for sessions that exist.
_KEYS = """ARRAY(
    SELECT (s.sid << 32) | k.idx
    FROM unnest(%(session_ids)b::text[], %(idxs)b::bigint[]) AS k(session_id, idx)
    JOIN {s}.sessions AS s ON s.session_id = k.session_id)"""


@dataclass(frozen=True, slots=True)
class Sql:
    """The statements, as templates (class defaults) or bound to a schema."""

    # -- sessions -------------------------------------------------------------------------
    create_session: str = """
        INSERT INTO {s}.sessions (session_id, priority, created_at, spec)
        VALUES (%s, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING RETURNING sid"""
    get_session: str = f"SELECT {SESSION_COLUMNS} FROM {{s}}.sessions WHERE session_id = %s"
    list_sessions: str = f"SELECT {SESSION_COLUMNS} FROM {{s}}.sessions ORDER BY sid"
    counts: str = """
        SELECT n_pending, n_running, n_succeeded, n_failed, n_cancelled
        FROM {s}.sessions WHERE session_id = %s"""
    lock_session: str = (
        "SELECT sid, last_done_seq FROM {s}.sessions WHERE session_id = %s FOR UPDATE"
    )
    # Running tasks first, in key order: renewals may hold some (see cancel_all).
    lock_running: str = """
        SELECT count(*) FROM (
            SELECT 1 FROM {s}.tasks
            WHERE key = ANY(ARRAY(SELECT key FROM {s}.tasks WHERE sid = %s AND state = 1))
            ORDER BY key FOR UPDATE
        ) AS locked"""
    delete_session: str = """
        WITH tasks AS (DELETE FROM {s}.tasks WHERE key BETWEEN %(first)s AND %(last)s),
            batches AS (DELETE FROM {s}.batches WHERE sid = %(sid)s),
            blobs AS (DELETE FROM {s}.blobs WHERE session_id = %(session_id)s)
        DELETE FROM {s}.sessions WHERE sid = %(sid)s"""

    # -- submit ---------------------------------------------------------------------------
    submit: str = """
        SELECT * FROM {s}.submit_tasks(
            %(session_id)s, %(batch_key)s, %(handlers)b::text[], %(codecs)b::text[],
            %(payloads)b::bytea[], %(payload_refs)b::text[], %(timeouts)b::float8[], %(now)s,
            %(max_index)s, %(work_channel)s)"""

    # -- claim ----------------------------------------------------------------------------
    # One statement: the function (schema version 2) plans the split between sessions, locks
    # them and takes their tasks in the server, so a claim costs one round trip.
    claim: str = """
        SELECT * FROM {s}.claim_tasks(%(worker_id)s, %(max_tasks)s, %(now)s, %(expiry)s)"""

    # -- leases ---------------------------------------------------------------------------
    renew: str = f"""
        WITH locked AS MATERIALIZED (
            SELECT t.ctid AS tid, t.key, t.state, t.worker_id, t.attempt FROM {{s}}.tasks AS t
            WHERE t.key = ANY({_KEYS})
            ORDER BY t.key FOR UPDATE
        )
        UPDATE {{s}}.tasks AS t SET lease_expiry = %(expiry)s
        FROM {{s}}.sessions AS s
        WHERE s.sid = t.sid AND t.ctid = ANY(ARRAY(
            SELECT l.tid FROM locked AS l
            JOIN unnest(%(session_ids)b::text[], %(idxs)b::bigint[], %(attempts)b::integer[])
                AS k(session_id, idx, attempt)
                ON l.key & {INDEX_MASK} = k.idx AND l.attempt = k.attempt
            JOIN {{s}}.sessions AS ks ON ks.session_id = k.session_id AND ks.sid = l.key >> 32
            WHERE l.state = 1 AND l.worker_id = %(worker_id)s))
        RETURNING s.session_id, t.key & {INDEX_MASK}, t.attempt"""
    expired: str = f"""
        SELECT s.session_id, t.key & {INDEX_MASK}, t.worker_id, t.attempt, t.lease_expiry,
            t.n_errors, t.n_timeouts, t.n_lost, s.spec
        FROM {{s}}.tasks AS t JOIN {{s}}.sessions AS s ON s.sid = t.sid
        WHERE t.state = 1 AND t.lease_expiry <= %(now)s
        ORDER BY t.lease_expiry LIMIT %(limit)s"""

    # -- complete and expire --------------------------------------------------------------
    # One statement: the function (schema version 2) locks, checks the fences, numbers and
    # writes in the server; it returns the 1-based positions of the completions accepted.
    end_attempts: str = """
        SELECT {s}.end_attempts(
            %(session_ids)b::text[], %(idxs)b::bigint[], %(worker_ids)b::text[],
            %(attempts)b::integer[], %(states)b::smallint[], %(not_before)b::float8[],
            %(results)b::bytea[], %(result_refs)b::text[], %(errors)b::bytea[],
            %(failures)b::smallint[], %(now)s, %(max_expiry)s, %(finished_channel)s,
            %(work_channel)s)"""
    # Tasks named by key, locked in key order (cancel with task ids).
    lock_tasks: str = """
        SELECT key, state, worker_id, attempt, lease_expiry FROM {s}.tasks
        WHERE key = ANY(%b::bigint[]) ORDER BY key FOR UPDATE"""

    # -- cancel ---------------------------------------------------------------------------
    cancel_close: str = """
        UPDATE {s}.sessions SET is_cancelled = true WHERE session_id = %s
        RETURNING sid, last_done_seq, fresh_from"""
    # Locks in key order, as every other statement does, so it cannot deadlock with renewals.
    cancel_all: str = """
        WITH open_keys AS MATERIALIZED (
            SELECT key FROM {s}.tasks
            WHERE key BETWEEN %(first_key)s AND %(last_key)s AND state = 0 AND attempt = 0
            UNION ALL
            SELECT key FROM {s}.tasks WHERE sid = %(sid)s AND state = 0 AND attempt > 0
            UNION ALL
            SELECT key FROM {s}.tasks WHERE sid = %(sid)s AND state = 1
        ), locked AS MATERIALIZED (
            SELECT key, state FROM {s}.tasks
            WHERE key = ANY(ARRAY(SELECT key FROM open_keys))
            ORDER BY key FOR UPDATE
        ), numbered AS MATERIALIZED (
            SELECT key, state, row_number() OVER (ORDER BY key) AS rn
            FROM locked WHERE state IN (0, 1)
        ), cancelled AS (
            UPDATE {s}.tasks AS t
            SET state = 4, worker_id = NULL, finished_at = %(now)s, error = NULL,
                done_seq = %(last_done_seq)s + o.rn
            FROM numbered AS o
            WHERE t.key = ANY(ARRAY(SELECT key FROM numbered)) AND t.key = o.key
            RETURNING o.state
        ), tally AS (
            SELECT count(*) FILTER (WHERE state = 0) AS pending,
                count(*) FILTER (WHERE state = 1) AS running
            FROM cancelled
        ), counted AS (
            UPDATE {s}.sessions AS s
            SET n_pending = s.n_pending - tally.pending, n_running = s.n_running - tally.running,
                n_cancelled = s.n_cancelled + tally.pending + tally.running,
                last_done_seq = s.last_done_seq + tally.pending + tally.running,
                fresh_from = s.next_index, fresh_holes = 0
            FROM tally WHERE s.sid = %(sid)s
        )
        SELECT tally.pending + tally.running, (
            SELECT count(*) FROM (
                SELECT pg_notify(%(finished_channel)s, %(session_id)s)
                WHERE tally.pending + tally.running > 0
            ) AS n)
        FROM tally"""
    cancel_some: str = f"""
        WITH cancelled AS (
            UPDATE {{s}}.tasks AS t
            SET state = 4, worker_id = NULL, finished_at = %(now)s, error = NULL,
                done_seq = c.done_seq
            FROM unnest(%(keys)b::bigint[], %(done_seqs)b::bigint[]) AS c(key, done_seq)
            WHERE t.key = ANY(%(keys)b::bigint[]) AND t.key = c.key
            RETURNING 1
        ), counted AS ({_COUNTS})
        SELECT (SELECT count(*) FROM cancelled), (SELECT count(*) FROM ({_NOTIFY}) AS n)"""

    # -- reading tasks --------------------------------------------------------------------
    tasks: str = f"""
        SELECT s.session_id, t.{RECORD_COLUMNS.replace(", ", ", t.")}
        FROM {{s}}.tasks AS t JOIN {{s}}.sessions AS s ON s.sid = t.sid
        WHERE t.key = ANY({_KEYS})"""
    finished: str = f"""
        SELECT t.* FROM {{s}}.sessions AS s
        LEFT JOIN LATERAL (
            SELECT {RECORD_COLUMNS} FROM {{s}}.tasks
            WHERE sid = s.sid AND done_seq > %(after)s AND done_seq <= %(until)s
            ORDER BY done_seq
        ) AS t ON true
        WHERE s.session_id = %(session_id)s"""

    # -- wake-ups -------------------------------------------------------------------------
    # Whether a task is claimable at %s, and if not, the earliest due time of a delayed
    # retry (the subquery runs only then): one round trip for the check a wait makes before
    # it sleeps.
    work_ready: str = f"""
        WITH r AS MATERIALIZED (SELECT EXISTS (
            SELECT 1 FROM {{s}}.sessions AS s
            WHERE s.has_pending AND (
                EXISTS (
                    SELECT 1 FROM {{s}}.tasks AS t
                    WHERE t.key BETWEEN (s.sid << 32) + s.fresh_from
                            AND (s.sid << 32) + {INDEX_MASK}
                        AND t.state = 0 AND t.attempt = 0)
                OR EXISTS (
                    SELECT 1 FROM {{s}}.tasks AS t
                    WHERE t.sid = s.sid AND t.state = 0 AND t.attempt > 0
                        AND t.not_before <= %s))) AS is_ready)
        SELECT r.is_ready, CASE WHEN NOT r.is_ready THEN (
            SELECT min(not_before) FROM {{s}}.tasks WHERE state = 0 AND attempt > 0) END
        FROM r"""
    last_done_seq: str = "SELECT last_done_seq FROM {s}.sessions WHERE session_id = %s"

    # -- blobs ----------------------------------------------------------------------------
    blob_put: str = """
        INSERT INTO {s}.blobs (key, session_id, data) VALUES (%s, %s, %s)
        ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data"""
    blob_get: str = "SELECT data FROM {s}.blobs WHERE key = %s"
    blob_delete_session: str = "DELETE FROM {s}.blobs WHERE session_id = %s"
    blob_discard: str = "DELETE FROM {s}.blobs WHERE key = ANY(%s)"

    def bound(self, schema_q: str) -> Sql:
        """These statements with ``{s}`` replaced by the quoted schema ``schema_q``."""
        return Sql(**{f.name: getattr(self, f.name).replace("{s}", schema_q) for f in fields(self)})
