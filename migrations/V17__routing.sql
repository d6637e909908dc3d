-- Routing: a worker that serves only some queues (JOBQ_QUEUES) claims, while Redis is down, only
-- their jobs. jobq_claim_next_limited (V16) gains the list of queues served (NULL: every queue).
-- The five-argument function stays, for workers of the previous release during an upgrade.
-- Below: the limited claims join the popped ids as a set.
CREATE FUNCTION jobq_claim_next_limited(worker text, now_ timestamptz, lease_ms bigint, how_many bigint, start_by timestamptz, served text[])
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    at_ timestamptz;
BEGIN
    IF start_by IS NOT NULL AND now() > start_by THEN
        RETURN;
    END IF;
    SELECT array_agg(s.queue ORDER BY s.queue) INTO locked FROM queue_settings s
    WHERE (s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL) AND NOT s.paused
      AND (served IS NULL OR s.queue = ANY(served))
      AND EXISTS (SELECT FROM jobs j WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_);
    IF locked IS NULL THEN
        RETURN;
    END IF;
    at_ := jobq_lock_limited(locked);
    RETURN QUERY SELECT * FROM jobq_take_limited(jobq_pick(locked, NULL, now_, how_many, at_), worker, now_, lease_ms, at_);
END
$$;

-- The limited claims, with the popped ids joined as a set. Tested with `= ANY(ids)`, a claim of
-- 1,000 ids walked the queue's pending jobs in claim order and compared each with every id: about
-- a second for 1,000 ids among 20,000 pending, where the ordinary claim (claim_many.sql) takes
-- tens of milliseconds. As there, the status is tested as `status || ''`, which no index matches,
-- so that each id is one lookup by primary key.
CREATE OR REPLACE FUNCTION jobq_take(pick uuid[], worker text, now_ timestamptz, lease_ms bigint)
RETURNS SETOF jobs LANGUAGE sql VOLATILE AS $$
    WITH claimed AS (
        UPDATE jobs j
        SET status = 'IN_PROGRESS', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
            lease_expires_at = now() + interval '1 millisecond' * lease_ms, renewed_at = NULL, worker_id = worker,
            started_at = COALESCE(j.started_at, now_), updated_at = now_
        FROM unnest(pick) AS want(id)
        WHERE j.id = want.id AND j.status || '' = 'PENDING'
        RETURNING j.*
    ), attempt AS (
        INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, outcome)
        SELECT id, lease_token, attempts, worker_id, now_, 'RUNNING' FROM claimed
    )
    SELECT * FROM claimed
$$;

CREATE OR REPLACE FUNCTION jobq_pick(locked text[], ids uuid[], now_ timestamptz, how_many bigint, at_ timestamptz)
RETURNS uuid[] LANGUAGE sql VOLATILE AS $$
    WITH s AS (
        SELECT q.queue, q.rate_limit, q.rate_period_ms, q.rate_key,
               CASE WHEN q.concurrency IS NOT NULL THEN greatest(q.concurrency - (
                   SELECT count(*) FROM jobs r WHERE r.queue = q.queue AND r.status = 'IN_PROGRESS'
               ), 0) END AS slots
        FROM queue_settings q
        WHERE q.queue = ANY(locked) AND NOT q.paused
    ), popped AS (
        SELECT j.id, j.queue, j.priority, j.run_at, j.payload
        FROM unnest(ids) AS want(id) JOIN jobs j ON j.id = want.id
        WHERE j.status || '' = 'PENDING' AND j.run_at <= now_ AND j.queue = ANY(locked)
    ), cand AS (
        SELECT c.id, c.queue, c.priority, c.run_at, s.slots, s.rate_limit,
               jobq_rate_key(c.payload, s.rate_key) AS key
        FROM s, LATERAL (
            SELECT j.id, j.queue, j.priority, j.run_at, j.payload FROM jobs j
            WHERE ids IS NULL AND j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT 1000
        ) c
        UNION ALL
        SELECT p.id, p.queue, p.priority, p.run_at, s.slots, s.rate_limit,
               jobq_rate_key(p.payload, s.rate_key)
        FROM popped p JOIN s ON s.queue = p.queue
    ), used AS (
        SELECT st.queue, st.key, count(*) AS n
        FROM queue_starts st JOIN s ON s.queue = st.queue
        WHERE s.rate_limit IS NOT NULL AND st.started_at > at_ - interval '1 millisecond' * s.rate_period_ms
        GROUP BY st.queue, st.key
    ), ranked AS (
        SELECT cand.*,
               row_number() OVER (PARTITION BY cand.queue ORDER BY cand.priority DESC, cand.run_at, cand.id) AS in_queue,
               row_number() OVER (PARTITION BY cand.queue, cand.key ORDER BY cand.priority DESC, cand.run_at, cand.id) AS in_key
        FROM cand
    )
    SELECT array_agg(id) FROM (
        SELECT r.id FROM ranked r LEFT JOIN used u ON u.queue = r.queue AND u.key = r.key
        WHERE (r.slots IS NULL OR r.in_queue <= r.slots)
          AND (r.rate_limit IS NULL OR r.in_key <= r.rate_limit - COALESCE(u.n, 0))
        ORDER BY r.priority DESC, r.run_at, r.id
        LIMIT how_many
    ) picked
$$;

-- The same for the queues of the popped ids.
CREATE OR REPLACE FUNCTION jobq_claim_limited(ids uuid[], worker text, now_ timestamptz, lease_ms bigint, start_by timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    at_ timestamptz;
BEGIN
    IF start_by IS NOT NULL AND now() > start_by THEN
        RETURN;
    END IF;
    SELECT array_agg(q ORDER BY q) INTO locked FROM (
        SELECT DISTINCT j.queue AS q FROM unnest(ids) AS want(id) JOIN jobs j ON j.id = want.id
        JOIN queue_settings s ON s.queue = j.queue
        WHERE j.status || '' = 'PENDING' AND NOT s.paused
          AND (s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL)
    ) limited;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    at_ := jobq_lock_limited(locked);
    RETURN QUERY SELECT * FROM jobq_take_limited(jobq_pick(locked, ids, now_, 1000, at_), worker, now_, lease_ms, at_);
END
$$;
