-- release: gives a job back unfinished; the attempt does not count. At worker shutdown it may run
-- again at once; when this worker has no handler for its type, or when the reaper gives back a
-- lease that ran out never renewed, after a backoff.
-- $1 id, $2 lease_token, $3 now, $4 run again at, $5 why (kept in the attempt's history),
-- $6 whether it counts as a release (a worker that stopped before the job ended, a lease never
-- renewed), $7 only if expired (the reaper's guard: a heartbeat that renewed it since it was read
-- wins)
-- A job whose cancellation was requested while it ran ends CANCELLED instead of running again.
-- Returns the job's run_at and priority, and whether it was cancelled; none when the lease was lost.
WITH released AS (
    UPDATE jobs
    SET status = CASE WHEN cancel_requested_at IS NULL THEN 'PENDING' ELSE 'CANCELLED' END,
        completed_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE $3::timestamptz END,
        attempts = attempts - 1, releases = releases + CASE WHEN $6::boolean THEN 1 ELSE 0 END, run_at = $4, updated_at = $3,
        lease_expires_at = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
      AND (NOT $7::boolean OR lease_expires_at < now())
    RETURNING id, lease_token, run_at, priority, status, queue, attempts, worker_id, attempt_started_at, attempt_token
), attempt AS (
    -- The attempt's row (see complete_many.sql), numbered as it was claimed: the job's count was
    -- refunded above.
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, lease_token, attempts + 1, worker_id, attempt_started_at, $3, 'RELEASED', $5
    FROM released WHERE attempt_token = lease_token
), opened AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = 'RELEASED', error = $5
    FROM released
    WHERE released.attempt_token IS DISTINCT FROM released.lease_token
      AND a.job_id = released.id AND a.lease_token = released.lease_token
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, 1
    FROM released WHERE status = 'CANCELLED'
    ON CONFLICT (queue, minute, shard) DO UPDATE SET cancelled = t.cancelled + EXCLUDED.cancelled
)
SELECT run_at, priority, status = 'CANCELLED' AS cancelled FROM released
