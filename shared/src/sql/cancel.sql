-- cancel: withdraws a job that has not started.
-- $1 id, $2 now
-- Returns the job row; none when the job is missing or not PENDING.
UPDATE jobs
SET status = 'CANCELLED', completed_at = $2, updated_at = $2
WHERE id = $1 AND status = 'PENDING'
RETURNING *
