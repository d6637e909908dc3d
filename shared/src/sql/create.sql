-- create: inserts a PENDING job, unless its idempotency key is taken.
-- $1 id, $2 job_type, $3 queue, $4 payload, $5 priority, $6 max_attempts, $7 run_at,
-- $8 timeout_ms, $9 idempotency_key (or NULL), $10 idempotency_request (or NULL), $11 now
-- Returns the new row; no row when the key belongs to an existing job (find_by_key then).
INSERT INTO jobs (id, job_type, queue, payload, status, max_attempts, priority, run_at, timeout_ms,
                  idempotency_key, idempotency_request, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'PENDING', $6, $5, $7, $8, $9, $10, $11, $11)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *
