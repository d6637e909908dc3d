-- What every job's lifecycle writes, made lighter. A claim, a completion and a failure each
-- update the job's row, and since status is indexed that update writes an entry into every
-- index of jobs; the claim also inserts the attempt. Measured on a 20,000-job table
-- (docs/PERFORMANCE.md): the foreign key from job_attempts to jobs cost 14-21 ms per 1,000
-- claims, a fifth of the claim, in the trigger that checks (and key-share locks) the job row the
-- same statement has just updated; and the search indexes of V3 tripled what a completion costs.

-- Attempts are only ever written by the statements that claim and finish their job, in the same
-- statement as the job's own row, so the key cannot dangle through jobq. A job is never deleted
-- by jobq; whoever deletes jobs deletes their attempts with them (DELETE FROM job_attempts
-- WHERE job_id = ANY(...)), in the same transaction.
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;

-- Completed jobs are most of the table and most of the updates: a search for them walks the
-- creation-time index (jobs_created_idx) instead, as it already did for lack of selectivity.
-- Every other status keeps its index, so a completion no longer writes into this one.
DROP INDEX jobs_status_created_idx;
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC) WHERE status <> 'COMPLETED';

-- Most jobs have no idempotency key, yet a unique constraint indexes every row, so every update
-- of a job wrote a NULL entry into it. Only keyed jobs need the index.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
