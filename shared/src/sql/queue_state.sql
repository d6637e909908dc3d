-- queue_state: per queue and status, the jobs waiting, running or dead, with the age of the
-- longest-due pending job (seconds, by the database's clock). Read at each metrics scrape.
-- Completed and cancelled jobs are left out: they only accumulate. The rows are found through the
-- status index (whose rows are the jobs not COMPLETED), so the cost grows with the backlog and the
-- DLQ, not with the jobs ever run.
SELECT queue, status, count(*) AS count,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'PENDING' AND run_at <= now()))::float8
           AS oldest_pending_age
FROM jobs
WHERE status IN ('PENDING', 'IN_PROGRESS', 'FAILED')
GROUP BY queue, status
ORDER BY queue, status
