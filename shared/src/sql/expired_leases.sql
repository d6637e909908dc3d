-- expired_leases: running jobs whose lease ran out (their worker died or hung), by the database clock.
-- $1 limit
-- Returns the job rows, the oldest expiry first.
SELECT * FROM jobs
WHERE status = 'IN_PROGRESS' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
