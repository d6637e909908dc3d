-- claim_many: claims every runnable job among the given ids under new leases, opening their attempts
-- in the jobs' rows (an attempt's own row is written when it ends; see V18__attempts_at_the_end.sql).
-- $1 ids, $2 worker_id, $3 now, $4 lease length in ms (the expiry is set by the database clock),
-- $5 start by: a claim that reaches the database after this claims nothing (its client gave up);
-- NULL for no bound
-- Returns the claimed rows; ids that are not PENDING, not due, of a paused queue or of a queue with a
-- concurrency or rate limit (claimed by jobq_claim_limited, V14 and V16) are left out.
-- The ids are tested with `= ANY`, and the status as `status || ''`, which no partial index matches:
-- jobs are found by the primary key (or, on a small table, by one pass over it), never through a
-- pending-jobs index. Two plans this replaced:
-- - joining the ids as a set (`FROM unnest($1) AS want(id) WHERE j.id = want.id`): with 100,000
--   pending jobs analyzed, the planner ran a nested loop that compared every pending job with every
--   id, 100 million comparisons and 12.7 s for a claim of 1,000 ids (13 to 33 ms with `= ANY`,
--   from 2,000 to 500,000 jobs, analyzed or not);
-- - `status = 'PENDING'` with stale statistics (a burst of new jobs, not yet analyzed): the planner
--   read every pending job through a pending-jobs index, 18 of 65 ms for a claim of 1,000 ids among
--   20,000 pending, and more the deeper the backlog.
UPDATE jobs j
SET status = 'IN_PROGRESS', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
    lease_expires_at = now() + interval '1 millisecond' * $4::bigint, renewed_at = NULL, worker_id = $2, started_at = COALESCE(j.started_at, $3),
    attempt_started_at = $3, attempt_token = j.lease_token + 1, updated_at = $3
WHERE j.id = ANY($1::uuid[]) AND j.status || '' = 'PENDING' AND j.run_at <= $3 AND ($5::timestamptz IS NULL OR now() <= $5)
  AND NOT EXISTS (SELECT FROM queue_settings s WHERE s.queue = j.queue AND (s.paused OR s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL))
RETURNING j.*
