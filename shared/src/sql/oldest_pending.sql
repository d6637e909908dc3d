-- oldest_pending: the age (seconds, by the database's clock) of one queue's longest-due pending
-- job, for a backlog too large to count.
-- $1 queue
SELECT NULL::text AS queue, extract(epoch FROM now() - min(run_at))::float8 AS oldest_pending_age
FROM jobs
WHERE status = 'PENDING' AND queue = $1 AND run_at <= now()
