-- bulk_batch (a template, filled by Store::operation_batch): one batch of a bulk operation, in one
-- statement, so that its action and the move of the operation's cursor commit together.
--
-- `op` locks the operation's row, and only while its phase and cursor are still the ones this
-- batch was read from: a second processor running the same operation at the same time finds the
-- row locked (or, once the first commits, moved on) and does nothing. `batch` is the next page of
-- the search (find.sql's, newest first, after the cursor). `acted` is the action, guarded by the
-- status each job must still have; it is filled in per action and status, and ends in a CTE
-- named `acted` that returns the id, queue and priority of each job acted on. A batch shorter than the batch
-- size ends its phase; the last phase ends the operation.
-- $1..$9 the search (see find.sql; $1 this phase's status, $8 and $9 the cursor), $10 batch size,
-- $11 operation id, $12 phase, $13 now
WITH op AS (
    SELECT id FROM operations
    WHERE id = $11 AND state = 'RUNNING' AND phase = $12
      AND cursor_created_at IS NOT DISTINCT FROM $8 AND cursor_id IS NOT DISTINCT FROM $9
    FOR UPDATE SKIP LOCKED
), batch AS (
    SELECT m.id, m.created_at FROM (
{finder}
    ) AS m
    WHERE EXISTS (SELECT 1 FROM op)
), {act}, tally AS (
    SELECT (SELECT count(*) FROM batch) AS matched, (SELECT count(*) FROM acted) AS acted
), last AS (
    SELECT created_at, id FROM batch ORDER BY created_at, id LIMIT 1
), moved AS (
    UPDATE operations o SET
        phase = CASE WHEN t.matched < $10 THEN o.phase + 1 ELSE o.phase END,
        cursor_created_at = CASE WHEN t.matched < $10 THEN NULL ELSE (SELECT created_at FROM last) END,
        cursor_id = CASE WHEN t.matched < $10 THEN NULL ELSE (SELECT id FROM last) END,
        processed = o.processed + t.acted,
        skipped = o.skipped + t.matched - t.acted,
        state = CASE WHEN t.matched < $10 AND o.phase + 1 >= cardinality(o.statuses) THEN 'DONE' ELSE o.state END,
        finished_at = CASE WHEN t.matched < $10 AND o.phase + 1 >= cardinality(o.statuses) THEN $13::timestamptz END,
        updated_at = $13,
        last_error = NULL
    FROM tally t, op
    WHERE o.id = op.id
    RETURNING o.id
)
SELECT
    (SELECT count(*) FROM moved) AS owned,
    (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM acted) AS ids,
    (SELECT coalesce(array_agg(queue ORDER BY id), '{}') FROM acted) AS queues,
    (SELECT coalesce(array_agg(priority ORDER BY id), '{}') FROM acted) AS priorities
