-- request_cancel: records that a running job should stop; its worker acts on it. A second
-- request keeps the time of the first.
-- $1 id, $2 now
-- Returns the job row; none when the job is missing or not IN_PROGRESS.
UPDATE jobs
SET cancel_requested_at = COALESCE(cancel_requested_at, $2), updated_at = $2
WHERE id = $1 AND status = 'IN_PROGRESS'
RETURNING *
