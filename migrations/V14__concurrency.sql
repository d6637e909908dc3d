-- A queue's concurrency limit: at no instant do more than `concurrency` of its jobs run, across
-- every process and Lambda. NULL is no limit.
--
-- The limit is enforced by the claim, in Postgres. The ordinary claims (claim_many, claim_next)
-- leave a limited queue's jobs out; they are claimed only by the two functions below, which take
-- a transaction-level advisory lock per limited queue (in queue-name order, so two claims never
-- wait on each other in a cycle) and then count the queue's running jobs: under the lock, the
-- count sees every claim that held it before, and no other claim of the queue can commit until
-- this one has. Both are PL/pgSQL and VOLATILE, so that the counting query takes its snapshot
-- after the locks were granted (in one plain statement, the snapshot would predate them).
--
-- A popped id that its limit holds back is dropped, not pushed again: the worker that frees a
-- slot of the queue, and the promoter every 100 ms, push the queue's next pending jobs, as many
-- as it has free slots (limited_ready.sql). The repairer leaves limited queues to them.
ALTER TABLE queue_settings ADD COLUMN concurrency integer CHECK (concurrency BETWEEN 1 AND 1000000);

-- The running jobs of a queue, counted under its lock.
CREATE INDEX jobs_running_queue_idx ON jobs (queue) WHERE status = 'IN_PROGRESS';
-- A queue's next pending jobs, in claim order, for limited_ready.sql.
CREATE INDEX jobs_queue_pending_idx ON jobs (queue, priority DESC, run_at, id) WHERE status = 'PENDING';

-- The lock of a limited queue's claims.
CREATE FUNCTION jobq_concurrency_lock(queue text) RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('jobq concurrency ' || queue, 0))
$$;

-- Claims the jobs `pick` (already chosen and row-locked by the caller's transaction) under new
-- leases, opening their attempts, as claim_many does. Returns the claimed rows.
CREATE FUNCTION jobq_take(pick uuid[], worker text, now_ timestamptz, lease_ms bigint)
RETURNS SETOF jobs LANGUAGE sql VOLATILE AS $$
    WITH claimed AS (
        UPDATE jobs j
        SET status = 'IN_PROGRESS', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
            lease_expires_at = now() + interval '1 millisecond' * lease_ms, renewed_at = NULL, worker_id = worker,
            started_at = COALESCE(j.started_at, now_), updated_at = now_
        WHERE j.id = ANY(pick) AND j.status = 'PENDING'
        RETURNING j.*
    ), attempt AS (
        INSERT INTO job_attempts (job_id, lease_token, attempt, worker_id, started_at, outcome)
        SELECT id, lease_token, attempts, worker_id, now_, 'RUNNING' FROM claimed
    )
    SELECT * FROM claimed
$$;

-- The free slots of each of the `locked` queues (their locks held): the limit less the jobs
-- running, counted by a query that starts after the locks were granted.
CREATE FUNCTION jobq_free_slots(locked text[])
RETURNS TABLE (queue text, slots bigint) LANGUAGE sql VOLATILE AS $$
    SELECT s.queue, greatest(s.concurrency - (
        SELECT count(*) FROM jobs r WHERE r.queue = s.queue AND r.status = 'IN_PROGRESS'
    ), 0)
    FROM queue_settings s
    WHERE s.queue = ANY(locked) AND s.concurrency IS NOT NULL AND NOT s.paused
$$;

-- Claims, among `ids`, the runnable jobs of limited queues that fit under their limits, best
-- first (priority, then due time). The arguments are claim_many's; returns the claimed rows.
CREATE FUNCTION jobq_claim_limited(ids uuid[], worker text, now_ timestamptz, lease_ms bigint, start_by timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    pick uuid[];
BEGIN
    IF start_by IS NOT NULL AND now() > start_by THEN
        RETURN;
    END IF;
    SELECT array_agg(q ORDER BY q) INTO locked FROM (
        SELECT DISTINCT j.queue AS q FROM jobs j JOIN queue_settings s ON s.queue = j.queue
        WHERE j.id = ANY(ids) AND j.status = 'PENDING' AND s.concurrency IS NOT NULL AND NOT s.paused
    ) limited;
    IF locked IS NULL THEN
        RETURN;
    END IF;
    PERFORM jobq_concurrency_lock(q) FROM unnest(locked) WITH ORDINALITY AS l(q, n) ORDER BY n;
    SELECT array_agg(p.id) INTO pick FROM jobq_free_slots(locked) f, LATERAL (
        SELECT j.id FROM jobs j
        WHERE j.id = ANY(ids) AND j.queue = f.queue AND j.status = 'PENDING' AND j.run_at <= now_
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT f.slots
        FOR UPDATE SKIP LOCKED
    ) p;
    RETURN QUERY SELECT * FROM jobq_take(pick, worker, now_, lease_ms);
END
$$;

-- Claims up to `how_many` of the best runnable jobs of limited queues, within their limits,
-- straight from Postgres (while Redis is down). The arguments are claim_next's.
CREATE FUNCTION jobq_claim_next_limited(worker text, now_ timestamptz, lease_ms bigint, how_many bigint, start_by timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    pick uuid[];
BEGIN
    IF start_by IS NOT NULL AND now() > start_by THEN
        RETURN;
    END IF;
    SELECT array_agg(s.queue ORDER BY s.queue) INTO locked FROM queue_settings s
    WHERE s.concurrency IS NOT NULL AND NOT s.paused
      AND EXISTS (SELECT FROM jobs j WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_);
    IF locked IS NULL THEN
        RETURN;
    END IF;
    PERFORM jobq_concurrency_lock(q) FROM unnest(locked) WITH ORDINALITY AS l(q, n) ORDER BY n;
    SELECT array_agg(best.id) INTO pick FROM (
        SELECT p.id FROM jobq_free_slots(locked) f, LATERAL (
            SELECT j.id, j.priority, j.run_at FROM jobs j
            WHERE j.queue = f.queue AND j.status = 'PENDING' AND j.run_at <= now_
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT f.slots
            FOR UPDATE SKIP LOCKED
        ) p
        ORDER BY p.priority DESC, p.run_at, p.id
        LIMIT how_many
    ) best;
    RETURN QUERY SELECT * FROM jobq_take(pick, worker, now_, lease_ms);
END
$$;
