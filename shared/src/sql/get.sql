-- get: one job.
-- $1 id
-- Returns the job row, whether its queue is paused, and its queue's concurrency limit with the
-- number of its jobs running (for a pending job of a limited queue; else NULL); or none.
SELECT j.*, COALESCE(s.paused, false) AS queue_paused, s.concurrency AS queue_concurrency,
       CASE WHEN j.status = 'PENDING' AND s.concurrency IS NOT NULL THEN
           (SELECT count(*) FROM jobs r WHERE r.queue = j.queue AND r.status = 'IN_PROGRESS')
       END AS queue_running
FROM jobs j LEFT JOIN queue_settings s ON s.queue = j.queue
WHERE j.id = $1
