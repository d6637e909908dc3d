-- parents_of: the parents a job waits on (or waited on), each with its status; NULL status for a
-- parent that no longer exists.
-- $1 child id
SELECT d.parent AS id, p.status FROM job_dependencies d LEFT JOIN jobs p ON p.id = d.parent
WHERE d.child = $1
ORDER BY d.parent
