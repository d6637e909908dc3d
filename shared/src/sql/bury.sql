-- bury: a failed attempt after which the job is dead (FAILED, in the DLQ); the caller decided so
-- (a permanent error, or the last attempt). Guarded: only while the caller's lease is the job's
-- ($2), and, for the reaper ($6), only if the lease has run out by the database clock when this
-- lands.
-- $1 id, $2 lease_token, $3 now, $4 error, $5 attempt outcome, $6 only if expired
-- Returns the job's id; none when the guard did not hold.
WITH buried AS (
    UPDATE jobs
    SET status = 'FAILED', completed_at = $3, last_error = $4, updated_at = $3,
        lease_expires_at = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
      AND (NOT $6::boolean OR lease_expires_at < now())
    RETURNING id, lease_token, queue, attempts, worker_id, attempt_started_at, attempt_token
), attempt AS (
    -- The attempt's row (see complete_many.sql).
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, lease_token, attempts, worker_id, attempt_started_at, $3, $5, $4
    FROM buried WHERE attempt_token = lease_token
), opened AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = $5, error = $4
    FROM buried
    WHERE buried.attempt_token IS DISTINCT FROM buried.lease_token
      AND a.job_id = buried.id AND a.lease_token = buried.lease_token
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, dead)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, 1
    FROM buried
    ON CONFLICT (queue, minute, shard) DO UPDATE SET dead = t.dead + EXCLUDED.dead
)
SELECT id FROM buried
