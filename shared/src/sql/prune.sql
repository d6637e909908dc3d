-- prune (a template, filled by `maintenance::pruner`): deletes up to $2 jobs of one final status
-- that finished more than $1 milliseconds ago by the database's clock, with their attempts and
-- their listing rows. The finder (the first CTE) selects them through an index:
-- - COMPLETED: the listing's creation-time index, oldest first (a job finished before the cutoff
--   was created before it), skipping the other statuses;
-- - CANCELLED: the status index (status, created_at);
-- - FAILED: the dead-job index (completed_at).
-- Rows another transaction holds (a requeue, say) are skipped, never waited for.
-- $1 retention (ms), $2 batch size, $3 queues: those left out (the default retention) or the one
-- pruned (a queue's own)
-- Returns the deleted jobs' ids.
WITH doomed AS (
    {finder}
), attempts AS (
    DELETE FROM job_attempts a USING doomed WHERE a.job_id = doomed.id
), listing AS (
    DELETE FROM job_listing l USING doomed WHERE l.id = doomed.id
)
DELETE FROM jobs j USING doomed WHERE j.id = doomed.id
RETURNING j.id
