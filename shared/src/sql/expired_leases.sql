-- expired_leases: running jobs whose lease ran out (their worker died or hung).
-- $1 now, $2 limit
-- Returns the job rows, the oldest expiry first.
SELECT * FROM jobs
WHERE status = 'IN_PROGRESS' AND lease_expires_at < $1
ORDER BY lease_expires_at
LIMIT $2
