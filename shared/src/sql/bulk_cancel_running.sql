-- bulk_cancel_running (a part of bulk_batch): a cancel request on the batch's running jobs, as
-- request_cancel.sql records one; their workers stop them at the next heartbeat.
acted AS (
    UPDATE jobs j
    SET cancel_requested_at = COALESCE(j.cancel_requested_at, $13), updated_at = $13
    FROM batch
    WHERE j.id = batch.id AND j.status = 'IN_PROGRESS'
    RETURNING j.id, j.queue, j.priority
)
