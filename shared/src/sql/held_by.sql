-- held_by: which of the given jobs are running under this worker (after a claim whose answer was
-- lost: the leases it took, if it committed).
-- $1 ids, $2 worker_id
SELECT * FROM jobs
WHERE id = ANY($1::uuid[]) AND status = 'IN_PROGRESS' AND worker_id = $2
