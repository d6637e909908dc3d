-- bulk_requeue (a part of bulk_batch): dead jobs of the batch back to PENDING with a fresh attempt
-- budget, as requeue.sql does one.
acted AS (
    UPDATE jobs j
    SET status = 'PENDING', attempts = 0, run_at = $13, completed_at = NULL, updated_at = $13
    FROM batch
    WHERE j.id = batch.id AND j.status = 'FAILED'
    RETURNING j.id, j.queue, j.priority
)
