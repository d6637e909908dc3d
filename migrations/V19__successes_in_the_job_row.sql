-- A job's successful attempt stays in the job's row (docs/PERFORMANCE.md, "Successes kept in the
-- job's row").
--
-- Since V18 a claim opens its attempt in the job's row (`attempts`, `lease_token`, `worker_id`,
-- `attempt_started_at`, `attempt_token`), and each outcome writes the ended attempt's row into
-- `job_attempts`. A success no longer does. COMPLETED is final: no statement moves a job out of it
-- (a requeue takes FAILED jobs only), and no claim can open another attempt over it. So the job's
-- row holds its last attempt for as long as the job exists, and a completion, the most common
-- outcome, writes one row and one index entry less.
--
-- `job_attempt_history` is a job's whole history: the ended attempts in `job_attempts`, and the
-- attempt held in the job's row, RUNNING while the job is IN_PROGRESS and SUCCEEDED once it is
-- COMPLETED. A success recorded by the previous release has its row in `job_attempts` and is also
-- still in the job's row; `NOT EXISTS` keeps it once. An attempt opened in a RUNNING row by a claim
-- of an older release (`attempt_token` not the lease's) is finished in that row, as before.
--
-- During an upgrade, a process of the previous release reads `job_attempts` alone, so it does not
-- show the successes that this release recorded. Nothing else reads them.
CREATE VIEW job_attempt_history AS
SELECT job_id, lease_token, attempt, worker_id, started_at, finished_at, outcome, error
FROM job_attempts
UNION ALL
SELECT j.id, j.lease_token, j.attempts, j.worker_id, j.attempt_started_at,
       CASE WHEN j.status = 'COMPLETED' THEN j.completed_at END,
       CASE WHEN j.status = 'COMPLETED' THEN 'SUCCEEDED' ELSE 'RUNNING' END,
       NULL
FROM jobs j
WHERE j.status IN ('IN_PROGRESS', 'COMPLETED') AND j.attempt_token = j.lease_token
  AND NOT EXISTS (SELECT FROM job_attempts a WHERE a.job_id = j.id AND a.lease_token = j.lease_token);
