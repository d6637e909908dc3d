-- history_many: the attempts of many jobs, for a page of them, as history.sql reads one job's.
-- $1 job ids
-- Returns the attempt rows, by job, oldest attempt first.
SELECT job_id, attempt, lease_token, worker_id, started_at, finished_at, outcome, error
FROM job_attempt_history
WHERE job_id = ANY($1::uuid[])
ORDER BY job_id, lease_token
