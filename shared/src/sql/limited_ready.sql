-- limited_ready: the next pending jobs of each queue with a concurrency or rate limit (or only of
-- $2's), as many as fit under its limits now (jobq_pick, V16, without taking the locks: a guess
-- the claim checks), to push to Redis: a popped id its limit held back was dropped, so this is how
-- a limited queue's jobs reach the workers again.
-- $1 now, $2 queues, or NULL for every limited queue
-- Returns id, queue, priority, run_at.
SELECT j.id, j.queue, j.priority, j.run_at
FROM unnest(jobq_pick(
    ARRAY(
        SELECT s.queue FROM queue_settings s
        WHERE (s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL) AND NOT s.paused
          AND ($2::text[] IS NULL OR s.queue = ANY($2))
    ),
    NULL, $1, 100000, clock_timestamp()
)) AS p(id)
JOIN jobs j ON j.id = p.id
