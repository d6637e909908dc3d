-- A queue's rate limit: no more than `rate_limit` of its jobs start in any window of
-- `rate_period_ms`, fleet-wide; with `rate_key` (a path into the payload, dot-separated, such as
-- `customer.id`), no more than that per value of the key: jobs whose payload lacks the key share
-- one window. NULL: no limit.
--
-- Enforced where the concurrency limit is (V14), by the same two claim functions, which this
-- replaces: under the queue's lock, `jobq_pick` counts the starts recorded in `queue_starts`
-- within the period before the lock holder's own clock reading (`clock_timestamp()`, taken after
-- the lock was granted, so later than every start recorded before), and admits no more than the
-- limit allows; each admitted start is recorded at that reading. Any window of the period then
-- holds at most the limit: when the last start in it was admitted, every earlier one in the
-- window was counted. Starts older than the period are deleted as the queue's claims go.
ALTER TABLE queue_settings
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    ADD COLUMN rate_period_ms integer CHECK (rate_period_ms BETWEEN 1 AND 86400000),
    ADD COLUMN rate_key text CHECK (length(rate_key) BETWEEN 1 AND 200),
    ADD CONSTRAINT queue_settings_rate_whole CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL)
                                                   AND (rate_key IS NULL OR rate_limit IS NOT NULL));

-- The starts of rate-limited queues' jobs within their period, per key value.
CREATE TABLE queue_starts (
    queue      text        NOT NULL,
    key        text        NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX queue_starts_idx ON queue_starts (queue, key, started_at);

-- The value of a job's rate-limit key: the payload's field at `path` as text; '' when the limit
-- has no key or the payload lacks the field.
CREATE FUNCTION jobq_rate_key(payload jsonb, path text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN path IS NULL THEN '' ELSE COALESCE(payload #>> string_to_array(path, '.'), '') END
$$;

-- Chooses, among the pending due jobs of the `locked` queues (their locks held; only `ids` among
-- them when given, else the first 1,000 of each queue in claim order), at most `how_many`, best
-- first, that fit under each queue's concurrency limit and rate limit at `at_`.
CREATE FUNCTION jobq_pick(locked text[], ids uuid[], now_ timestamptz, how_many bigint, at_ timestamptz)
RETURNS uuid[] LANGUAGE sql VOLATILE AS $$
    WITH s AS (
        SELECT q.queue, q.rate_limit, q.rate_period_ms, q.rate_key,
               CASE WHEN q.concurrency IS NOT NULL THEN greatest(q.concurrency - (
                   SELECT count(*) FROM jobs r WHERE r.queue = q.queue AND r.status = 'IN_PROGRESS'
               ), 0) END AS slots
        FROM queue_settings q
        WHERE q.queue = ANY(locked) AND NOT q.paused
    ), cand AS (
        SELECT c.id, c.queue, c.priority, c.run_at, s.slots, s.rate_limit,
               jobq_rate_key(c.payload, s.rate_key) AS key
        FROM s, LATERAL (
            SELECT j.id, j.queue, j.priority, j.run_at, j.payload FROM jobs j
            WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_
              AND (ids IS NULL OR j.id = ANY(ids))
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT 1000
        ) c
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

-- Claims `pick` under the queues' locks and records the rate-limited starts at `at_`.
CREATE FUNCTION jobq_take_limited(pick uuid[], worker text, now_ timestamptz, lease_ms bigint, at_ timestamptz)
RETURNS SETOF jobs LANGUAGE sql VOLATILE AS $$
    WITH claimed AS (
        SELECT * FROM jobq_take(pick, worker, now_, lease_ms)
    ), started AS (
        INSERT INTO queue_starts (queue, key, started_at)
        SELECT c.queue, jobq_rate_key(c.payload, s.rate_key), at_
        FROM claimed c JOIN queue_settings s ON s.queue = c.queue
        WHERE s.rate_limit IS NOT NULL
    )
    SELECT * FROM claimed
$$;

-- Locks the `locked` queues in order, and forgets their starts older than their period; returns
-- the clock reading their claims are judged and recorded at.
CREATE FUNCTION jobq_lock_limited(locked text[]) RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    at_ timestamptz;
BEGIN
    PERFORM jobq_concurrency_lock(q) FROM unnest(locked) WITH ORDINALITY AS l(q, n) ORDER BY n;
    at_ := clock_timestamp();
    DELETE FROM queue_starts st USING queue_settings s
    WHERE st.queue = ANY(locked) AND s.queue = st.queue
      AND (s.rate_limit IS NULL OR st.started_at <= at_ - interval '1 millisecond' * s.rate_period_ms);
    RETURN at_;
END
$$;

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
        SELECT DISTINCT j.queue AS q FROM jobs j JOIN queue_settings s ON s.queue = j.queue
        WHERE j.id = ANY(ids) AND j.status = 'PENDING' AND NOT s.paused
          AND (s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL)
    ) limited;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    at_ := jobq_lock_limited(locked);
    RETURN QUERY SELECT * FROM jobq_take_limited(jobq_pick(locked, ids, now_, 1000, at_), worker, now_, lease_ms, at_);
END
$$;

CREATE OR REPLACE FUNCTION jobq_claim_next_limited(worker text, now_ timestamptz, lease_ms bigint, how_many bigint, start_by timestamptz)
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
      AND EXISTS (SELECT FROM jobs j WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_);
    IF locked IS NULL THEN
        RETURN;
    END IF;
    at_ := jobq_lock_limited(locked);
    RETURN QUERY SELECT * FROM jobq_take_limited(jobq_pick(locked, NULL, now_, how_many, at_), worker, now_, lease_ms, at_);
END
$$;
