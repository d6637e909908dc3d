-- status_of: a job's status, run_at and priority, to explain why a guarded write matched nothing.
-- $1 id
SELECT status, run_at, priority FROM jobs WHERE id = $1
