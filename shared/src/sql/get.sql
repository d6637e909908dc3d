-- get: one job.
-- $1 id
-- Returns the job row, or none.
SELECT * FROM jobs WHERE id = $1
