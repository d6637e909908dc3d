-- bulk_cancel_pending (a part of bulk_batch): the batch's jobs that have not started (pending or
-- blocked on their dependencies), CANCELLED
-- and counted in this minute's outcomes of their queues, as cancel.sql does one.
acted AS (
    UPDATE jobs j
    SET status = 'CANCELLED', completed_at = $13, updated_at = $13
    FROM batch
    WHERE j.id = batch.id AND j.status IN ('PENDING', 'BLOCKED')
    RETURNING j.id, j.priority, j.queue
), counted AS (
    INSERT INTO queue_throughput AS t (queue, minute, shard, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, count(*)
    FROM acted
    GROUP BY queue
    ON CONFLICT (queue, minute, shard) DO UPDATE SET cancelled = t.cancelled + EXCLUDED.cancelled
)
