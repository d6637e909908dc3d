-- complete: records success, if the caller still holds the lease.
-- $1 id, $2 lease_token, $3 now
-- Returns one row on success; none when the lease was lost.
WITH done AS (
    UPDATE jobs
    SET status = 'COMPLETED', completed_at = $3, updated_at = $3, lease_expires_at = NULL,
        worker_id = NULL, last_error = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
    RETURNING id, lease_token
), attempt AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = 'SUCCEEDED'
    FROM done WHERE a.job_id = done.id AND a.lease_token = done.lease_token
)
SELECT id FROM done
