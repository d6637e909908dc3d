-- bulk_delete (a part of bulk_batch): the batch's finished jobs deleted, with their attempts and
-- listing rows, as prune.sql deletes them. Only jobs still in the phase's status (a final one,
-- written in by Store::operation_batch) go.
doomed AS (
    SELECT j.id, j.priority FROM jobs j JOIN batch ON batch.id = j.id
    WHERE j.status = 'STATUS'
    FOR UPDATE OF j
), attempts AS (
    DELETE FROM job_attempts a USING doomed WHERE a.job_id = doomed.id
), listing AS (
    DELETE FROM job_listing l USING doomed WHERE l.id = doomed.id
), acted AS (
    DELETE FROM jobs j USING doomed WHERE j.id = doomed.id
    RETURNING j.id, j.queue, j.priority
)
