-- claim: takes one runnable job under a new lease and opens its attempt.
-- $1 id, $2 worker_id, $3 now, $4 lease expiry
-- Returns the claimed row (with the new lease_token); none when the job is not PENDING or not due.
-- Two claims of one job serialize on its row lock; the second then sees IN_PROGRESS and gets none.
WITH claimed AS (
    UPDATE jobs
    SET status = 'IN_PROGRESS', attempts = attempts + 1, lease_token = lease_token + 1,
        lease_expires_at = $4, worker_id = $2, started_at = COALESCE(started_at, $3), updated_at = $3
    WHERE id = $1 AND status = 'PENDING' AND run_at <= $3
    RETURNING *
), attempt AS (
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, outcome)
    SELECT id, lease_token, attempts, worker_id, $3, 'RUNNING' FROM claimed
)
SELECT * FROM claimed
