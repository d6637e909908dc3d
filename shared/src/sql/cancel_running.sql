-- cancel_running: ends a running job whose cancellation was requested, once its worker has stopped
-- it. Guarded: only while the caller's lease is the job's ($2) and the request stands.
-- $1 id, $2 lease_token, $3 now, $4 why (kept in the attempt's history)
-- Returns the job's id; none when the guard did not hold.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'CANCELLED', completed_at = $3, updated_at = $3, lease_expires_at = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2 AND cancel_requested_at IS NOT NULL
    RETURNING id, lease_token, queue, attempts, worker_id, attempt_started_at, attempt_token
), attempt AS (
    -- The attempt's row (see complete_many.sql).
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, lease_token, attempts, worker_id, attempt_started_at, $3, 'CANCELLED', $4
    FROM cancelled WHERE attempt_token = lease_token
), opened AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = 'CANCELLED', error = $4
    FROM cancelled
    WHERE cancelled.attempt_token IS DISTINCT FROM cancelled.lease_token
      AND a.job_id = cancelled.id AND a.lease_token = cancelled.lease_token
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, 1
    FROM cancelled
    ON CONFLICT (queue, minute, shard) DO UPDATE SET cancelled = t.cancelled + EXCLUDED.cancelled
)
SELECT id FROM cancelled
