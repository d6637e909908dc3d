-- create_many: inserts many jobs in one statement, each with its listing row and its dependencies.
-- A row whose idempotency key is taken (by an earlier job, or by an earlier row of this batch) is
-- skipped.
-- $1 ids, $2 job_types, $3 queues, $4 payloads, $5 priorities, $6 max_attempts, $7 run_ats,
-- $8 timeouts_ms, $9 idempotency_keys (NULL elements for none), $10 idempotency_requests, $11 now,
-- $12 traceparents (NULL elements for none), $13 and $14 the dependencies as (child, parent)
-- pairs, a parent being a stored job or a row of this batch
-- Returns the inserted rows.
-- A job with a parent not COMPLETED is BLOCKED; the others are PENDING. The stored parents are
-- locked as a completion locks them, in id order (two creates wait for each other rather than
-- deadlock), and flagged `has_dependents`: a completion that commits first is seen here, and one
-- that commits after sees the flag (see V12__dependencies.sql).
WITH edges AS (
    SELECT * FROM unnest($13::uuid[], $14::uuid[]) AS e(child, parent)
), locked AS (
    SELECT p.id, p.status, p.has_dependents FROM jobs p
    WHERE p.id IN (SELECT parent FROM edges)
    ORDER BY p.id
    FOR NO KEY UPDATE
), flagged AS (
    UPDATE jobs p SET has_dependents = true FROM locked l WHERE p.id = l.id AND NOT l.has_dependents
), blocked AS (
    SELECT DISTINCT e.child FROM edges e LEFT JOIN locked l ON l.id = e.parent
    WHERE l.status IS DISTINCT FROM 'COMPLETED'
), parents AS (
    SELECT DISTINCT parent FROM edges
), inserted AS (
    INSERT INTO jobs (id, job_type, queue, payload, status, max_attempts, priority, run_at, timeout_ms,
                      idempotency_key, idempotency_request, created_at, updated_at, traceparent,
                      has_dependents)
    SELECT t.id, t.job_type, t.queue, t.payload,
           CASE WHEN b.child IS NULL THEN 'PENDING' ELSE 'BLOCKED' END,
           t.max_attempts, t.priority, t.run_at, t.timeout_ms,
           t.idempotency_key, t.idempotency_request, $11, $11, t.traceparent, p.parent IS NOT NULL
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::int4[], $7::timestamptz[],
                $8::int4[], $9::text[], $10::jsonb[], $12::text[])
         WITH ORDINALITY AS t(id, job_type, queue, payload, priority, max_attempts, run_at, timeout_ms,
              idempotency_key, idempotency_request, traceparent, n)
    LEFT JOIN blocked b ON b.child = t.id
    LEFT JOIN parents p ON p.parent = t.id
    ORDER BY t.n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), listed AS (
    INSERT INTO job_listing (id, created_at, queue, job_type)
    SELECT id, created_at, queue, job_type FROM inserted
), linked AS (
    INSERT INTO job_dependencies (parent, child)
    SELECT e.parent, e.child FROM edges e JOIN inserted i ON i.id = e.child
)
SELECT * FROM inserted
