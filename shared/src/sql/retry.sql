-- retry: a failed attempt whose job runs again at $5; the caller decided that it may (retryable,
-- attempts left). Guarded: only while the caller's lease is the job's ($2), only with attempts left,
-- and, for the reaper ($7), only if the lease has run out by the database clock when this lands (a
-- heartbeat that renewed it since it was read wins).
-- $1 id, $2 lease_token, $3 now, $4 error, $5 run again at, $6 attempt outcome, $7 only if expired
-- A job whose cancellation was requested while it ran ends CANCELLED instead of running again.
-- Returns the job's run_at and priority, and whether it was cancelled; none when the guard did not
-- hold.
WITH retried AS (
    UPDATE jobs
    SET status = CASE WHEN cancel_requested_at IS NULL THEN 'PENDING' ELSE 'CANCELLED' END,
        completed_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE $3::timestamptz END,
        run_at = $5, last_error = $4, updated_at = $3, lease_expires_at = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2 AND attempts < max_attempts
      AND (NOT $7::boolean OR lease_expires_at < now())
    RETURNING id, lease_token, run_at, priority, status, queue, attempts, worker_id, attempt_started_at, attempt_token
), attempt AS (
    -- The attempt's row (see complete_many.sql).
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, lease_token, attempts, worker_id, attempt_started_at, $3, $6, $4
    FROM retried WHERE attempt_token = lease_token
), opened AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = $6, error = $4
    FROM retried
    WHERE retried.attempt_token IS DISTINCT FROM retried.lease_token
      AND a.job_id = retried.id AND a.lease_token = retried.lease_token
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, retried, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint,
           (status = 'PENDING')::int, (status = 'CANCELLED')::int
    FROM retried
    ON CONFLICT (queue, minute, shard) DO UPDATE SET retried = t.retried + EXCLUDED.retried, cancelled = t.cancelled + EXCLUDED.cancelled
)
SELECT run_at, priority, status = 'CANCELLED' AS cancelled FROM retried
