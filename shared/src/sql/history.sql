-- history: a job's attempts, oldest first.
-- $1 job id
SELECT attempt, lease_token, worker_id, started_at, finished_at, outcome, error
FROM job_attempts WHERE job_id = $1 ORDER BY lease_token
