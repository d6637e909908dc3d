-- create_many: inserts many PENDING jobs in one statement, each with its listing row. A row whose
-- idempotency key is taken (by an earlier job, or by an earlier row of this batch) is skipped.
-- $1 ids, $2 job_types, $3 queues, $4 payloads, $5 priorities, $6 max_attempts, $7 run_ats,
-- $8 timeouts_ms, $9 idempotency_keys (NULL elements for none), $10 idempotency_requests, $11 now,
-- $12 traceparents (NULL elements for none)
-- Returns the inserted rows.
WITH inserted AS (
    INSERT INTO jobs (id, job_type, queue, payload, status, max_attempts, priority, run_at, timeout_ms,
                      idempotency_key, idempotency_request, created_at, updated_at, traceparent)
    SELECT t.id, t.job_type, t.queue, t.payload, 'PENDING', t.max_attempts, t.priority, t.run_at, t.timeout_ms,
           t.idempotency_key, t.idempotency_request, $11, $11, t.traceparent
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::int4[], $7::timestamptz[],
                $8::int4[], $9::text[], $10::jsonb[], $12::text[])
         AS t(id, job_type, queue, payload, priority, max_attempts, run_at, timeout_ms, idempotency_key,
              idempotency_request, traceparent)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), listed AS (
    INSERT INTO job_listing (id, created_at, queue, job_type)
    SELECT id, created_at, queue, job_type FROM inserted
)
SELECT * FROM inserted
