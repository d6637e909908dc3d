-- requeue: a dead job back to PENDING with a fresh attempt budget; its history stays.
-- $1 id, $2 now
-- Returns the job row; none when the job is missing or not FAILED.
UPDATE jobs
SET status = 'PENDING', attempts = 0, run_at = $2, completed_at = NULL, updated_at = $2
WHERE id = $1 AND status = 'FAILED'
RETURNING *
