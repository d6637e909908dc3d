-- cancel: withdraws a job that has not started.
-- $1 id, $2 now
-- Returns the job row; none when the job is missing or not PENDING.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'CANCELLED', completed_at = $2, updated_at = $2
    WHERE id = $1 AND status = 'PENDING'
    RETURNING *
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, 1
    FROM cancelled
    ON CONFLICT (queue, minute, shard) DO UPDATE SET cancelled = t.cancelled + EXCLUDED.cancelled
)
SELECT * FROM cancelled
