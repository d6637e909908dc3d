-- queue_settings_put: sets a queue's settings; a NULL leaves that setting as it was.
-- $1 queue, $2 paused (or NULL), $3 now, $4 whether to set the concurrency limit, $5 the limit
-- (NULL: none)
-- Returns the row as it now is, and whether it was paused before (as of this statement's
-- snapshot: two resumes at once may both push the queue's jobs, which is harmless).
WITH before AS (
    SELECT paused FROM queue_settings WHERE queue = $1
), put AS (
    INSERT INTO queue_settings AS s (queue, paused, concurrency, updated_at)
    VALUES ($1, COALESCE($2, false), CASE WHEN $4 THEN $5::integer END, $3)
    ON CONFLICT (queue) DO UPDATE SET
        paused = COALESCE($2, s.paused),
        concurrency = CASE WHEN $4 THEN $5::integer ELSE s.concurrency END,
        updated_at = $3
    RETURNING *
)
SELECT put.*, COALESCE((SELECT paused FROM before), false) AS was_paused FROM put
