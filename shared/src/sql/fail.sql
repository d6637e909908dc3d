-- fail: records a failed attempt, if the caller still holds the lease. With attempts left and a
-- retryable error the job waits for its retry (PENDING); otherwise it is dead (FAILED).
-- $1 id, $2 lease_token, $3 now, $4 error, $5 retryable, $6 retry at, $7 attempt outcome
-- Returns the new status, run_at and priority; none when the lease was lost.
WITH failed AS (
    UPDATE jobs
    SET status       = CASE WHEN $5::boolean AND attempts < max_attempts THEN 'PENDING' ELSE 'FAILED' END,
        run_at       = CASE WHEN $5::boolean AND attempts < max_attempts THEN $6::timestamptz ELSE run_at END,
        completed_at = CASE WHEN $5::boolean AND attempts < max_attempts THEN NULL ELSE $3::timestamptz END,
        last_error = $4::text, updated_at = $3, lease_expires_at = NULL, worker_id = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
    RETURNING id, lease_token, status, run_at, priority
), attempt AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = $7, error = $4
    FROM failed WHERE a.job_id = failed.id AND a.lease_token = failed.lease_token
)
SELECT status, run_at, priority FROM failed
