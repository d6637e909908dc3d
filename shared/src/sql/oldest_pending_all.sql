-- oldest_pending_all: the age (seconds, by the database's clock) of each queue's longest-due
-- pending job, for a backlog too large to count: one pass over the due pending jobs (about 0.1 s
-- per 100,000 of them), where a query per queue would walk them all for each queue without one.
SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS oldest_pending_age
FROM jobs
WHERE status = 'PENDING' AND run_at <= now()
GROUP BY queue
