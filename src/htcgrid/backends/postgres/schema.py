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

# Version 2: claim and complete/expire as functions, so each costs the caller one round trip
# (one statement, its own transaction) however many sessions and tasks it touches. Their
# statements run in the server in the order the locking protocol needs: session rows in
# ``sid`` order, then task rows in key order, then the writes. Each statement takes a new
# snapshot, so what follows a lock sees the rows as the lock found them.
_V2 = (
    # The claim: plan the split between sessions (the same water-fill as
    # htcgrid.core.fairshare.plan_claim: priority first, then equal shares, the least recently
    # served first, the earlier ones taking the remainder), lock the planned sessions, take
    # their oldest claimable tasks. Rows come back in plan order, then oldest first; each
    # session's spec only on its first row.
    """CREATE FUNCTION {s}.claim_tasks(
        p_worker_id text, p_max bigint, p_now double precision, p_expiry double precision)
    RETURNS TABLE (
        o_session_id text, o_spec bytea, o_key bigint, o_attempt integer, o_n_errors integer,
        o_n_timeouts integer, o_n_lost integer, o_handler text, o_codec text, o_payload bytea,
        o_payload_ref text, o_timeout_s double precision)
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
    DECLARE
        v_sids bigint[];
        v_priorities integer[];
        v_pending bigint[];
        v_taken bigint[];
        v_count integer;
        v_first integer := 1;
        v_last integer;
        v_left bigint := p_max;
        v_budget bigint;
        v_each bigint;
        v_extra bigint;
        v_active integer[];
        v_wanting integer[];
        v_is_small boolean;
        v_plan_sids bigint[] := '{}';
        v_plan_ns bigint[] := '{}';
        v_live_sids bigint[];
        v_ns bigint[];
        v_firsts bigint[];
        v_lasts bigint[];
        k integer;
    BEGIN
        SELECT array_agg(c.sid ORDER BY c.priority DESC, c.last_served, c.session_id COLLATE "C"),
            array_agg(c.priority ORDER BY c.priority DESC, c.last_served,
                      c.session_id COLLATE "C"),
            array_agg(c.n_pending ORDER BY c.priority DESC, c.last_served,
                      c.session_id COLLATE "C")
        INTO v_sids, v_priorities, v_pending
        FROM {s}.sessions AS c WHERE c.has_pending;
        v_count := coalesce(cardinality(v_sids), 0);
        IF v_count = 0 OR p_max <= 0 THEN
            RETURN;
        END IF;
        v_taken := array_fill(0::bigint, ARRAY[v_count]);
        WHILE v_first <= v_count AND v_left > 0 LOOP  -- one priority level at a time
            v_last := v_first;
            WHILE v_last < v_count AND v_priorities[v_last + 1] = v_priorities[v_first] LOOP
                v_last := v_last + 1;
            END LOOP;
            v_budget := v_left;
            v_active := ARRAY(SELECT generate_series(v_first, v_last));
            WHILE v_budget > 0 AND cardinality(v_active) > 0 LOOP
                v_each := v_budget / cardinality(v_active);
                v_is_small := false;
                v_wanting := '{}';
                FOREACH k IN ARRAY v_active LOOP
                    IF v_pending[k] <= v_each THEN
                        v_is_small := true;
                    ELSE
                        v_wanting := v_wanting || k;
                    END IF;
                END LOOP;
                IF NOT v_is_small THEN  -- all want more than a share: split what is left
                    v_extra := v_budget - v_each * cardinality(v_active);
                    FOR k IN 1 .. cardinality(v_active) LOOP
                        v_taken[v_active[k]] := v_each + CASE WHEN k <= v_extra THEN 1 ELSE 0 END;
                    END LOOP;
                    EXIT;
                END IF;
                FOREACH k IN ARRAY v_active LOOP  -- the small ones take all they have
                    IF v_pending[k] <= v_each THEN
                        v_taken[k] := v_pending[k];
                        v_budget := v_budget - v_pending[k];
                    END IF;
                END LOOP;
                v_active := v_wanting;
            END LOOP;
            FOR k IN v_first .. v_last LOOP
                IF v_taken[k] > 0 THEN
                    v_plan_sids := v_plan_sids || v_sids[k];
                    v_plan_ns := v_plan_ns || v_taken[k];
                    v_left := v_left - v_taken[k];
                END IF;
            END LOOP;
            v_first := v_last + 1;
        END LOOP;

        PERFORM 1 FROM {s}.sessions AS s WHERE s.sid = ANY(v_plan_sids) ORDER BY s.sid FOR UPDATE;
        -- Per planned session still there (not deleted since the plan): the window of keys
        -- that holds its n oldest never-attempted tasks (see keys.fresh_window).
        SELECT array_agg(s.sid ORDER BY q.ord), array_agg(q.n ORDER BY q.ord),
            array_agg((s.sid << 32) + s.fresh_from ORDER BY q.ord),
            array_agg((s.sid << 32) + least(s.fresh_from + q.n + s.fresh_holes, s.next_index) - 1
                      ORDER BY q.ord)
        INTO v_live_sids, v_ns, v_firsts, v_lasts
        FROM unnest(v_plan_sids, v_plan_ns) WITH ORDINALITY AS q(sid, n, ord)
        JOIN {s}.sessions AS s ON s.sid = q.sid;
        IF v_live_sids IS NULL THEN
            RETURN;
        END IF;

        -- The n oldest claimable tasks of each session: due retries (tasks_retrying) merged
        -- with the never-attempted tasks of the key window. fresh_from then moves to the first
        -- never-attempted task left pending, and fresh_holes loses the cancelled ones it
        -- passed. That branch sees up to 2n tasks, so the first one left is among them, and it
        -- does not SKIP LOCKED, so fresh_from never passes a task not taken (as the claim holds
        -- the session's row, no other transaction holds its pending tasks).
        RETURN QUERY
        WITH candidates AS MATERIALIZED (
            SELECT p.sid, p.n, c.key, c.tid, c.is_fresh
            FROM unnest(v_live_sids, v_ns, v_firsts, v_lasts) AS p(sid, n, first_key, last_key)
            CROSS JOIN LATERAL (
                SELECT * FROM (
                    SELECT t.key, t.ctid AS tid, false AS is_fresh FROM {s}.tasks AS t
                    WHERE t.sid = p.sid AND t.state = 0 AND t.attempt > 0
                        AND t.not_before <= p_now
                    ORDER BY t.key LIMIT p.n
                    FOR UPDATE SKIP LOCKED
                ) AS retries
                UNION ALL
                SELECT * FROM (
                    SELECT t.key, t.ctid AS tid, true AS is_fresh FROM {s}.tasks AS t
                    WHERE t.key BETWEEN p.first_key AND p.last_key AND t.state = 0
                        AND t.attempt = 0
                    ORDER BY t.key LIMIT 2 * p.n
                    FOR UPDATE
                ) AS fresh
            ) AS c
        ), ranked AS MATERIALIZED (
            SELECT c.*, row_number() OVER (PARTITION BY c.sid ORDER BY c.key) AS rank
            FROM candidates AS c
        ), claimed AS (
            UPDATE {s}.tasks AS t
            SET state = 1, attempt = t.attempt + 1, worker_id = p_worker_id,
                lease_expiry = p_expiry
            WHERE t.ctid = ANY(ARRAY(SELECT r.tid FROM ranked AS r WHERE r.rank <= r.n))
            RETURNING t.sid, t.key, t.attempt, t.n_errors, t.n_timeouts, t.n_lost, t.handler,
                t.codec, t.payload, t.payload_ref, t.timeout_s
        ), served AS (
            UPDATE {s}.sessions AS s
            SET n_pending = s.n_pending - c.n, n_running = s.n_running + c.n,
                last_served = p_now, fresh_from = greatest(s.fresh_from, f.next_fresh),
                -- every index passed is a task just taken or a hole
                fresh_holes = s.fresh_holes
                    - (greatest(s.fresh_from, f.next_fresh) - s.fresh_from - c.fresh)
            FROM unnest(v_live_sids, v_lasts) AS p(sid, last_key)
            CROSS JOIN LATERAL (
                SELECT count(*) AS n, count(*) FILTER (WHERE cl.attempt = 1) AS fresh
                FROM claimed AS cl WHERE cl.sid = p.sid
            ) AS c
            CROSS JOIN LATERAL (  -- the first never-attempted task of the window left pending
                SELECT coalesce(min(r.key), p.last_key + 1) - (p.sid << 32) AS next_fresh
                FROM ranked AS r WHERE r.sid = p.sid AND r.is_fresh AND r.rank > r.n
            ) AS f
            WHERE s.sid = p.sid
        )
        SELECT s.session_id,
            CASE WHEN row_number() OVER (PARTITION BY cl.sid ORDER BY cl.key) = 1
                THEN s.spec END,
            cl.key, cl.attempt, cl.n_errors, cl.n_timeouts, cl.n_lost, cl.handler, cl.codec,
            cl.payload, cl.payload_ref, cl.timeout_s
        FROM claimed AS cl
        JOIN unnest(v_live_sids) WITH ORDINALITY AS p(sid, ord) ON p.sid = cl.sid
        JOIN {s}.sessions AS s ON s.sid = cl.sid
        ORDER BY p.ord, cl.key;
    END $$""",
    # complete and expire: lock the named sessions, then their tasks; accept each completion
    # whose task still runs under its (worker, attempt) with a lease ending by p_max_expiry
    # (infinity for complete, now for expire), the first one per task; number the finished in
    # each session's done_seq in batch order; write outcomes, counters and one notification
    # per session with finished tasks (and one for workers if a retry went back to pending).
    # Returns the 1-based positions of the completions accepted.
    """CREATE FUNCTION {s}.end_attempts(
        p_session_ids text[], p_idxs bigint[], p_worker_ids text[], p_attempts integer[],
        p_states smallint[], p_not_before double precision[], p_results bytea[],
        p_result_refs text[], p_errors bytea[], p_failures smallint[],
        p_now double precision, p_max_expiry double precision,
        p_finished_channel text, p_work_channel text)
    RETURNS bigint[]
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
    DECLARE
        v_keys bigint[];
        v_accepted bigint[];
        v_ended bigint;
        v_notified bigint;
    BEGIN
        PERFORM 1 FROM {s}.sessions AS s
        WHERE s.session_id = ANY(p_session_ids) ORDER BY s.sid FOR UPDATE;
        v_keys := ARRAY(
            SELECT DISTINCT (s.sid << 32) | g.idx
            FROM unnest(p_session_ids, p_idxs) AS g(session_id, idx)
            JOIN {s}.sessions AS s ON s.session_id = g.session_id);
        PERFORM 1 FROM {s}.tasks AS t WHERE t.key = ANY(v_keys) ORDER BY t.key FOR UPDATE;
        WITH given AS MATERIALIZED (
            SELECT g.*, s.sid, s.last_done_seq, (s.sid << 32) | g.idx AS key
            FROM unnest(p_session_ids, p_idxs, p_worker_ids, p_attempts, p_states,
                        p_not_before, p_results, p_result_refs, p_errors, p_failures)
                WITH ORDINALITY AS g(session_id, idx, worker_id, attempt, state, not_before,
                                     result, result_ref, error, failure, ord)
            JOIN {s}.sessions AS s ON s.session_id = g.session_id
        ), locked AS MATERIALIZED (  -- by key only: the fence is tested one level up
            SELECT t.key, t.state, t.worker_id, t.attempt, t.lease_expiry FROM {s}.tasks AS t
            WHERE t.key = ANY(v_keys)
        ), held AS (
            SELECT g.*, row_number() OVER (PARTITION BY g.key ORDER BY g.ord) AS nth
            FROM given AS g JOIN locked AS l ON l.key = g.key
            WHERE l.state = 1 AND l.worker_id = g.worker_id AND l.attempt = g.attempt
                AND l.lease_expiry <= p_max_expiry
        ), accepted AS MATERIALIZED (
            SELECT h.*, CASE WHEN h.state <> 0 THEN h.last_done_seq + row_number() OVER (
                PARTITION BY h.sid, h.state <> 0 ORDER BY h.ord) END AS done_seq
            FROM held AS h WHERE h.nth = 1
        ), ended AS (
            UPDATE {s}.tasks AS t
            SET state = a.state, worker_id = NULL, not_before = a.not_before,
                finished_at = CASE WHEN a.state <> 0 THEN p_now END, done_seq = a.done_seq,
                result = a.result, result_ref = a.result_ref, error = a.error,
                n_errors = t.n_errors + CASE WHEN a.failure = 0 THEN 1 ELSE 0 END,
                n_timeouts = t.n_timeouts + CASE WHEN a.failure = 1 THEN 1 ELSE 0 END,
                n_lost = t.n_lost + CASE WHEN a.failure = 2 THEN 1 ELSE 0 END
            FROM accepted AS a
            -- one primary-key probe per row; "AND t.key = ANY(all keys)" would make each probe
            -- walk the whole array (quadratic in the batch: seconds for thousands)
            WHERE t.key = a.key
            RETURNING 1
        ), counted AS (
            UPDATE {s}.sessions AS s
            SET n_pending = s.n_pending + d.pending, n_running = s.n_running - d.total,
                n_succeeded = s.n_succeeded + d.succeeded, n_failed = s.n_failed + d.failed,
                n_cancelled = s.n_cancelled + d.cancelled,
                last_done_seq = s.last_done_seq + d.total - d.pending
            FROM (
                SELECT a.sid, count(*) AS total,
                    count(*) FILTER (WHERE a.state = 0) AS pending,
                    count(*) FILTER (WHERE a.state = 2) AS succeeded,
                    count(*) FILTER (WHERE a.state = 3) AS failed,
                    count(*) FILTER (WHERE a.state = 4) AS cancelled
                FROM accepted AS a GROUP BY a.sid
            ) AS d
            WHERE s.sid = d.sid
        ), notified AS (  -- delivered at commit
            SELECT pg_notify(p_finished_channel, f.session_id)
            FROM (SELECT DISTINCT a.session_id FROM accepted AS a WHERE a.state <> 0) AS f
            UNION ALL
            SELECT pg_notify(p_work_channel, '')
            WHERE EXISTS (SELECT 1 FROM accepted AS a WHERE a.state = 0)
        )
        SELECT ARRAY(SELECT a.ord FROM accepted AS a ORDER BY a.ord),
            (SELECT count(*) FROM ended), (SELECT count(*) FROM notified)
        INTO v_accepted, v_ended, v_notified;
        IF v_ended <> cardinality(v_accepted) THEN
            RAISE EXCEPTION 'tasks changed under their locks (a bug); nothing was applied';
        END IF;
        RETURN v_accepted;
    END $$""",
)

# Version 3: submit as a function too, one round trip instead of four (BEGIN, the session
# lock, the insert, COMMIT): a lone task's wait is made of such round trips. A task
# submitted without a timeout keeps NULL, which the claim reads as the session's default
# (the spec is msgpack, which the server does not read); rows of older versions hold it.
# Returns (status, first index, count): 0 added; -1 no such session; -2 the batch key was
# used before, for (first, count); -3 the session is cancelled; -4 the session is full.
_V3 = (
    """CREATE FUNCTION {s}.submit_tasks(
        p_session_id text, p_batch_key text, p_handlers text[], p_codecs text[],
        p_payloads bytea[], p_payload_refs text[], p_timeouts double precision[],
        p_now double precision, p_max_index bigint, p_work_channel text)
    RETURNS TABLE (o_status integer, o_first bigint, o_count bigint)
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        v_sid bigint;
        v_is_cancelled boolean;
        v_first bigint;
        v_seen_first bigint;
        v_seen_count bigint;
        v_n bigint := coalesce(cardinality(p_handlers), 0);
    BEGIN
        SELECT s.sid, s.is_cancelled, s.next_index, b.first_index, b.count
        INTO v_sid, v_is_cancelled, v_first, v_seen_first, v_seen_count
        FROM {s}.sessions AS s
        LEFT JOIN {s}.batches AS b ON b.sid = s.sid AND b.batch_key = p_batch_key
        WHERE s.session_id = p_session_id
        FOR UPDATE OF s;
        IF v_sid IS NULL THEN
            RETURN QUERY SELECT -1, 0::bigint, 0::bigint;
        ELSIF p_batch_key IS NOT NULL AND v_seen_first IS NOT NULL THEN
            RETURN QUERY SELECT -2, v_seen_first, v_seen_count;
        ELSIF v_is_cancelled THEN
            RETURN QUERY SELECT -3, 0::bigint, 0::bigint;
        ELSIF v_first + v_n - 1 > p_max_index THEN
            RETURN QUERY SELECT -4, 0::bigint, 0::bigint;
        ELSE
            INSERT INTO {s}.tasks
                (key, sid, handler, codec, payload, payload_ref, timeout_s, submitted_at)
            SELECT (v_sid << 32) + v_first + t.ord - 1, v_sid, t.handler, t.codec, t.payload,
                t.payload_ref, t.timeout_s, p_now
            FROM unnest(p_handlers, p_codecs, p_payloads, p_payload_refs, p_timeouts)
                WITH ORDINALITY AS t(handler, codec, payload, payload_ref, timeout_s, ord);
            IF p_batch_key IS NOT NULL THEN
                INSERT INTO {s}.batches (sid, batch_key, first_index, count)
                VALUES (v_sid, p_batch_key, v_first, v_n);
            END IF;
            UPDATE {s}.sessions
            SET next_index = next_index + v_n, n_pending = n_pending + v_n
            WHERE sid = v_sid;
            IF v_n > 0 THEN
                PERFORM pg_notify(p_work_channel, '');
            END IF;
            RETURN QUERY SELECT 0, v_first, v_n;
        END IF;
    END $$""",
)

#: Ordered migrations; the schema version is how many of them were applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
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
