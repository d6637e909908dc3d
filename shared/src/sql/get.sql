-- get: one job.
-- $1 id
-- Returns the job row, and whether its queue is paused; or none.
SELECT j.*, EXISTS (SELECT FROM queue_settings s WHERE s.queue = j.queue AND s.paused) AS queue_paused
FROM jobs j WHERE j.id = $1
