-- mark_repushed: picks PENDING jobs that are overdue (their id may be missing from Redis), but
-- not of a paused queue (the resume pushes those) or of a limited one (limited_ready.sql pushes
-- those as slots free), and
-- stamps them so that each is pushed again at most once per period.
-- $1 now, $2 overdue before this time, $3 limit
-- Returns id, queue, priority, run_at of the stamped jobs.
UPDATE jobs SET repushed_at = $1
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND run_at < $2 AND (repushed_at IS NULL OR repushed_at < $2)
      AND NOT EXISTS (SELECT FROM queue_settings s WHERE s.queue = jobs.queue AND (s.paused OR s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL))
    ORDER BY run_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING id, queue, priority, run_at
