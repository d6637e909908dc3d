-- not_due: which of the given jobs are pending but not yet due (an id popped early), to put back
-- on the schedule.
-- $1 ids, $2 now
-- Returns id, queue, priority, run_at.
SELECT id, queue, priority, run_at FROM jobs
WHERE id = ANY($1::uuid[]) AND status = 'PENDING' AND run_at > $2
