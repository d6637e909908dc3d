-- history_many: the attempts of many jobs, for a page of them.
-- $1 job ids
-- Returns the attempt rows, by job, oldest attempt first.
SELECT * FROM job_attempts
WHERE job_id = ANY($1::uuid[])
ORDER BY job_id, lease_token
