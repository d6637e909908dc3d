-- get: one job.
-- $1 id
-- Returns the job row, whether its queue is paused, and for a pending job of a limited queue its
-- concurrency limit with the number of its jobs running, and its rate limit with the starts in the
-- window of the job's key (else NULL); or none.
SELECT j.*, COALESCE(s.paused, false) AS queue_paused, s.concurrency AS queue_concurrency,
       CASE WHEN j.status = 'PENDING' AND s.concurrency IS NOT NULL THEN
           (SELECT count(*) FROM jobs r WHERE r.queue = j.queue AND r.status = 'IN_PROGRESS')
       END AS queue_running,
       s.rate_limit AS queue_rate_limit, s.rate_period_ms AS queue_rate_period_ms,
       CASE WHEN j.status = 'PENDING' AND s.rate_limit IS NOT NULL THEN
           (SELECT count(*) FROM queue_starts st
            WHERE st.queue = j.queue AND st.key = jobq_rate_key(j.payload, s.rate_key)
              AND st.started_at > clock_timestamp() - interval '1 millisecond' * s.rate_period_ms)
       END AS queue_rate_used
FROM jobs j LEFT JOIN queue_settings s ON s.queue = j.queue
WHERE j.id = $1
