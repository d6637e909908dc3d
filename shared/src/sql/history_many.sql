-- history_many: the attempts of many jobs, for a page of them; running attempts are read from the
-- jobs' rows, as in history.sql.
-- $1 job ids
-- Returns the attempt rows, by job, oldest attempt first.
SELECT job_id, attempt, lease_token, worker_id, started_at, finished_at, outcome, error
FROM job_attempts
WHERE job_id = ANY($1::uuid[])
UNION ALL
SELECT id, attempts, lease_token, worker_id, attempt_started_at, NULL, 'RUNNING', NULL
FROM jobs
WHERE id = ANY($1::uuid[]) AND status = 'IN_PROGRESS' AND attempt_token = lease_token
ORDER BY job_id, lease_token
