-- cancel: withdraws a job that has not started (pending, or blocked on its dependencies).
-- $1 id, $2 now
-- Returns the job row; none when the job is missing or neither PENDING nor BLOCKED.
WITH cancelled AS (
    UPDATE jobs
    SET status = 'CANCELLED', completed_at = $2, updated_at = $2
    WHERE id = $1 AND status IN ('PENDING', 'BLOCKED')
    RETURNING *
), counted AS (
    -- Counted in this minute's outcomes of the job's queue (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, cancelled)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, 1
    FROM cancelled
    ON CONFLICT (queue, minute, shard) DO UPDATE SET cancelled = t.cancelled + EXCLUDED.cancelled
)
SELECT * FROM cancelled
