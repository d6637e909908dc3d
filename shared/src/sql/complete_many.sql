-- complete_many: records success for many jobs at once, each only if its lease is still held.
-- $1 ids, $2 lease_tokens (same order), $3 now
-- Returns the ids completed, each with whether jobs depend on it (then release_children.sql runs
-- once this has committed); an id left out had lost its lease.
-- `status || ''` keeps the plan on the primary key, as in claim_many.sql: with statistics taken
-- while the jobs were pending, the planner may take the running-jobs index for a handful of rows
-- and rescan it for every id (a 1,000-id completion took over a second so).
-- The successful attempt stays in the job's row, where the claim opened it, and no row is written
-- into job_attempts (V19__successes_in_the_job_row.sql; job_attempt_history reads it from there).
-- An attempt that a claim of an older release opened as a RUNNING row is finished in that row
-- (`opened`; see V18__attempts_at_the_end.sql).
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int8[]) AS t(id, lease_token)
), done AS (
    UPDATE jobs j
    SET status = 'COMPLETED', completed_at = $3, updated_at = $3, lease_expires_at = NULL,
        last_error = NULL, dependents_pending = j.has_dependents
    FROM input
    WHERE j.id = input.id AND j.status || '' = 'IN_PROGRESS' AND j.lease_token = input.lease_token
    RETURNING j.id, j.lease_token, j.queue, j.has_dependents, j.attempt_token
), opened AS (
    UPDATE job_attempts a SET finished_at = $3, outcome = 'SUCCEEDED'
    FROM done
    WHERE done.attempt_token IS DISTINCT FROM done.lease_token
      AND a.job_id = done.id AND a.lease_token = done.lease_token
), counted AS (
    -- Counted in this minute's outcomes, one row per queue in queue order, so that two batches take
    -- their row locks in the same order (see V8__throughput.sql).
    INSERT INTO queue_throughput AS t (queue, minute, shard, completed)
    SELECT queue, date_trunc('minute', now()), floor(random() * 16)::smallint, count(*)
    FROM done GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, minute, shard) DO UPDATE SET completed = t.completed + EXCLUDED.completed
)
SELECT id, has_dependents FROM done
