-- Lighter claims and completions (docs/PERFORMANCE.md, "Attempts written at their end").
--
-- 1. An attempt's row is written once, when the attempt ends, instead of being inserted RUNNING by
--    the claim and updated by the outcome: a job costs one row version and its index entries less.
--    While the attempt runs, the job's own row holds what its history needs: `worker_id` (already
--    there), `attempts`, `lease_token`, and the two columns below. The history (history.sql) reads
--    the running attempt from there.
--
--    An ended attempt now leaves `worker_id` on the job (the worker that held it last); only a
--    running job also holds `lease_expires_at`, and the check `only_running_jobs_hold_a_lease` (V1)
--    still holds.
--
--    During an upgrade, workers of the previous release still open RUNNING rows in `job_attempts`.
--    `attempt_token` tells the two apart: a claim of this release sets it to the lease's token, a
--    claim of the previous release leaves it behind. An outcome recorded by this release inserts
--    the attempt's row when `attempt_token = lease_token`, and otherwise finishes the RUNNING row
--    the previous release opened. (An attempt claimed by this release whose outcome a process of the
--    previous release records, during the upgrade, is left out of the history: that process updates
--    a row that does not exist. The job itself is recorded as before.)
ALTER TABLE jobs
    ADD COLUMN attempt_started_at timestamptz,
    ADD COLUMN attempt_token bigint;

-- 2. One partial index over the running jobs instead of two. The running jobs are few (at most the
--    fleet's slots), so the reaper (expired_leases.sql) reads them all through the queue index and
--    sorts them by expiry in memory; a claim no longer writes an entry into `jobs_lease_idx`.
DROP INDEX jobs_lease_idx;

-- 3. The listing by status leaves out the running jobs too: for them, the running-jobs index and a
--    sort in memory do. A claim no longer writes an entry into it, a retry writes one as before.
DROP INDEX jobs_status_created_idx;
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC)
    WHERE status NOT IN ('COMPLETED', 'IN_PROGRESS');

-- The limited claims (jobq_take, last defined in V17): as claim_many.sql, with the attempt opened
-- in the job's row.
CREATE OR REPLACE FUNCTION jobq_take(pick uuid[], worker text, now_ timestamptz, lease_ms bigint)
RETURNS SETOF jobs LANGUAGE sql VOLATILE AS $$
    UPDATE jobs j
    SET status = 'IN_PROGRESS', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
        lease_expires_at = now() + interval '1 millisecond' * lease_ms, renewed_at = NULL, worker_id = worker,
        started_at = COALESCE(j.started_at, now_), attempt_started_at = now_, attempt_token = j.lease_token + 1,
        updated_at = now_
    FROM unnest(pick) AS want(id)
    WHERE j.id = want.id AND j.status || '' = 'PENDING'
    RETURNING j.*
$$;
