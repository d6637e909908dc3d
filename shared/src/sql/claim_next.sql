-- claim_next: claims the best runnable jobs straight from Postgres (used while Redis is down).
-- $1 worker_id, $2 now, $3 lease length in ms (the expiry is set by the database clock), $4 how many,
-- $5 start by: a claim that reaches the database after this claims nothing (its client gave up);
-- NULL for no bound; $6 the queues served, or NULL for every queue
-- Returns the claimed rows; jobs of paused queues and of limited ones (see jobq_claim_next_limited,
-- V14) are left out. SKIP LOCKED lets many workers do this at once without waiting.
WITH next AS (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND run_at <= $2 AND ($5::timestamptz IS NULL OR now() <= $5)
      AND ($6::text[] IS NULL OR queue = ANY($6))
      AND NOT EXISTS (SELECT FROM queue_settings s WHERE s.queue = jobs.queue AND (s.paused OR s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL))
    ORDER BY priority DESC, run_at, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET status = 'IN_PROGRESS', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
    lease_expires_at = now() + interval '1 millisecond' * $3::bigint, renewed_at = NULL, worker_id = $1, started_at = COALESCE(j.started_at, $2),
    attempt_started_at = $2, attempt_token = j.lease_token + 1, updated_at = $2
FROM next WHERE j.id = next.id
RETURNING j.*
