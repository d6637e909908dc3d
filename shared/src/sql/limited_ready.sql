-- limited_ready: the next pending jobs of each queue with a concurrency limit (or only of $2's),
-- as many per queue as it has free slots, to push to Redis: a popped id its limit held back was
-- dropped, so this is how a limited queue's jobs reach the workers again.
-- $1 now, $2 queues, or NULL for every limited queue
-- Returns id, priority, run_at.
SELECT p.id, p.priority, p.run_at
FROM queue_settings s
CROSS JOIN LATERAL (
    SELECT count(*) AS running FROM jobs r WHERE r.queue = s.queue AND r.status = 'IN_PROGRESS'
) r
CROSS JOIN LATERAL (
    SELECT j.id, j.priority, j.run_at FROM jobs j
    WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= $1
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT greatest(s.concurrency - r.running, 0)
) p
WHERE s.concurrency IS NOT NULL AND NOT s.paused AND ($2::text[] IS NULL OR s.queue = ANY($2))
