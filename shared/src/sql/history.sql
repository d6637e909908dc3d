-- history: a job's attempts, oldest first (job_attempt_history, V19: the ended attempts, and the
-- running or successful one that the job's row holds).
-- $1 job id
SELECT attempt, lease_token, worker_id, started_at, finished_at, outcome, error
FROM job_attempt_history WHERE job_id = $1
ORDER BY lease_token
