-- queue_settings_put: sets a queue's settings; a NULL leaves that setting as it was.
-- $1 queue, $2 paused (or NULL), $3 now, $4 whether to set the concurrency limit, $5 the limit
-- (NULL: none), then for completed, cancelled and dead jobs in turn whether to set the queue's
-- retention and the retention in ms (NULL: the default): $6 $7, $8 $9, $10 $11; $12 whether to set
-- the rate limit, $13 its limit (NULL: none), $14 its period in ms, $15 its key
-- Returns the row as it now is, and whether it was paused before (as of this statement's
-- snapshot: two resumes at once may both push the queue's jobs, which is harmless).
WITH before AS (
    SELECT paused FROM queue_settings WHERE queue = $1
), put AS (
    INSERT INTO queue_settings AS s (queue, paused, concurrency, retain_completed_ms, retain_cancelled_ms, retain_dead_ms,
                                     rate_limit, rate_period_ms, rate_key, updated_at)
    VALUES ($1, COALESCE($2, false), CASE WHEN $4 THEN $5::integer END,
            CASE WHEN $6 THEN $7::bigint END, CASE WHEN $8 THEN $9::bigint END, CASE WHEN $10 THEN $11::bigint END,
            CASE WHEN $12 THEN $13::integer END, CASE WHEN $12 THEN $14::integer END, CASE WHEN $12 THEN $15::text END, $3)
    ON CONFLICT (queue) DO UPDATE SET
        paused = COALESCE($2, s.paused),
        concurrency = CASE WHEN $4 THEN $5::integer ELSE s.concurrency END,
        retain_completed_ms = CASE WHEN $6 THEN $7::bigint ELSE s.retain_completed_ms END,
        retain_cancelled_ms = CASE WHEN $8 THEN $9::bigint ELSE s.retain_cancelled_ms END,
        retain_dead_ms = CASE WHEN $10 THEN $11::bigint ELSE s.retain_dead_ms END,
        rate_limit = CASE WHEN $12 THEN $13::integer ELSE s.rate_limit END,
        rate_period_ms = CASE WHEN $12 THEN $14::integer ELSE s.rate_period_ms END,
        rate_key = CASE WHEN $12 THEN $15::text ELSE s.rate_key END,
        updated_at = $3
    RETURNING *
)
SELECT put.*, COALESCE((SELECT paused FROM before), false) AS was_paused FROM put
