-- expire: records that an attempt's lease ran out, if it still has, by the database clock, when this
-- write lands: a heartbeat that renewed the lease since it was read wins. The caller decides the next
-- status: PENDING (retry after a backoff, from now by the database clock) or FAILED (dead).
-- $1 id, $2 lease_token, $3 now, $4 error, $5 next status ('PENDING' or 'FAILED'), $6 attempt outcome,
-- $7 retry delay in ms
-- Returns the new status, run_at and priority; none when the lease is held, renewed or already taken.
WITH expired AS (
    UPDATE jobs
    SET status = $5::text,
        run_at = CASE WHEN $5::text = 'PENDING' THEN now() + interval '1 millisecond' * $7::bigint ELSE run_at END,
        completed_at = CASE WHEN $5::text = 'PENDING' THEN NULL ELSE now() END,
        last_error = $4::text, updated_at = $3, lease_expires_at = NULL, worker_id = NULL
    WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2 AND lease_expires_at < now()
      AND ($5::text = 'FAILED' OR attempts < max_attempts)
    RETURNING id, lease_token, status, run_at, priority
), attempt AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = $6, error = $4
    FROM expired WHERE a.job_id = expired.id AND a.lease_token = expired.lease_token
)
SELECT status, run_at, priority FROM expired
