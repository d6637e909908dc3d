-- history: a job's attempts, oldest first. A running attempt's row is written when it ends
-- (V18__attempts_at_the_end.sql): until then it is read from the job's row.
-- $1 job id
SELECT attempt, lease_token, worker_id, started_at, finished_at, outcome, error
FROM job_attempts WHERE job_id = $1
UNION ALL
SELECT attempts, lease_token, worker_id, attempt_started_at, NULL, 'RUNNING', NULL
FROM jobs WHERE id = $1 AND status = 'IN_PROGRESS' AND attempt_token = lease_token
ORDER BY lease_token
