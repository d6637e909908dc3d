-- claim_many: claims every runnable job among the given ids under new leases, opening their attempts.
-- $1 ids, $2 worker_id, $3 now, $4 lease expiry
-- Returns the claimed rows; ids that are not PENDING or not due are left out.
WITH claimed AS (
    UPDATE jobs
    SET status = 'IN_PROGRESS', attempts = attempts + 1, lease_token = lease_token + 1,
        lease_expires_at = $4, worker_id = $2, started_at = COALESCE(started_at, $3), updated_at = $3
    WHERE id = ANY($1::uuid[]) AND status = 'PENDING' AND run_at <= $3
    RETURNING *
), attempt AS (
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, outcome)
    SELECT id, lease_token, attempts, worker_id, $3, 'RUNNING' FROM claimed
)
SELECT * FROM claimed
