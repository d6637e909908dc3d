-- stranded_parents: completed jobs whose children were not released after the completion (its
-- worker stopped in between), completed before $1; at most $2, oldest first.
SELECT id FROM jobs
WHERE dependents_pending AND completed_at < $1
ORDER BY completed_at
LIMIT $2
