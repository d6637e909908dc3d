-- release: gives a job back unfinished (worker shutdown). The attempt does not count.
-- $1 id, $2 lease_token, $3 now
-- Returns the job's priority; none when the lease was lost.
WITH released AS (
    UPDATE jobs
    SET status = 'PENDING', attempts = attempts - 1, run_at = $3, updated_at = $3,
        lease_expires_at = NULL, worker_id = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
    RETURNING id, lease_token, priority
), attempt AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = 'RELEASED', error = 'released at worker shutdown'
    FROM released WHERE a.job_id = released.id AND a.lease_token = released.lease_token
)
SELECT priority FROM released
