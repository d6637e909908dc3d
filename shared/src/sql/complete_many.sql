-- complete_many: records success for many jobs at once, each only if its lease is still held.
-- $1 ids, $2 lease_tokens (same order), $3 now
-- Returns the ids completed, each with whether jobs depend on it (then release_children.sql runs
-- once this has committed); an id left out had lost its lease.
-- `status || ''` keeps the plan on the primary key, as in claim_many.sql: with statistics taken
-- while the jobs were pending, the planner may take the running-jobs index for a handful of rows
-- and rescan it for every id (a 1,000-id completion took over a second so).
-- The attempt's row is written here, from the job's row (`attempt` below); an attempt that a claim
-- of the previous release opened as a RUNNING row is finished in place (`opened`; see
-- V18__attempts_at_the_end.sql). The other outcomes (retry.sql, bury.sql, release.sql,
-- cancel_running.sql) do the same.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int8[]) AS t(id, lease_token)
), done AS (
    UPDATE jobs j
    SET status = 'COMPLETED', completed_at = $3, updated_at = $3, lease_expires_at = NULL,
        last_error = NULL, dependents_pending = j.has_dependents
    FROM input
    WHERE j.id = input.id AND j.status || '' = 'IN_PROGRESS' AND j.lease_token = input.lease_token
    RETURNING j.id, j.lease_token, j.queue, j.has_dependents, j.attempts, j.worker_id, j.attempt_started_at, j.attempt_token
), attempt AS (
    INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome)
    SELECT id, lease_token, attempts, worker_id, attempt_started_at, $3, 'SUCCEEDED'
    FROM done WHERE attempt_token = lease_token
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
