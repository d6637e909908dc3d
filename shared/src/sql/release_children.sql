-- release_children: after parents completed (committed), their BLOCKED children whose parents have
-- all COMPLETED become PENDING, due no earlier than now; the parents' flag is cleared.
-- $1 parent ids, $2 now
-- Returns id, queue, priority, run_at of the released children, to be pushed to Redis.
-- Run as its own statement after the completion's commit, so that its snapshot holds every child
-- whose create committed before the completion (a create locks its parents: see V12). Two parents
-- completing at once each run this after their commit; the later one sees both completed. A
-- missing parent (deleted) keeps its child blocked.
WITH children AS (
    SELECT DISTINCT child FROM job_dependencies WHERE parent = ANY($1::uuid[])
), ready AS (
    SELECT c.child FROM children c
    WHERE NOT EXISTS (
        SELECT 1 FROM job_dependencies d LEFT JOIN jobs p ON p.id = d.parent
        WHERE d.child = c.child AND p.status IS DISTINCT FROM 'COMPLETED'
    )
), released AS (
    UPDATE jobs j
    SET status = 'PENDING', run_at = GREATEST(j.run_at, $2), updated_at = $2
    FROM ready
    WHERE j.id = ready.child AND j.status = 'BLOCKED'
    RETURNING j.id, j.queue, j.priority, j.run_at
), cleared AS (
    UPDATE jobs SET dependents_pending = false
    WHERE id = ANY($1::uuid[]) AND dependents_pending
)
SELECT id, queue, priority, run_at FROM released
