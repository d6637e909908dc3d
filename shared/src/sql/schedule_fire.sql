-- schedule_fire: fires ticks of one schedule. Moves its next tick from $2 to $3 by compare-and-set
-- (nothing happens unless the next tick is still $2 and the schedule is unpaused: a tick another
-- process fired, or a schedule changed since it was read, is left alone) and, in the same
-- statement, inserts a job per tick of $5, each under its tick's idempotency key. No job is
-- inserted when the schedule skips overlapping runs and its last job is PENDING or IN_PROGRESS;
-- the ticks still move on, counted as skipped.
-- $1 name, $2 next tick as read, $3 new next tick, $4 job ids, $5 ticks (oldest first),
-- $6 idempotency keys, $7 job_type, $8 queue, $9 payload, $10 priority, $11 max_attempts,
-- $12 timeout_ms, $13 the idempotency request, $14 now, $15 ticks missed (no job)
-- Returns no row when the tick was not moved; otherwise one row per job inserted (or one row with
-- a NULL id when none was), with `overlapped`.
WITH previous AS (
    SELECT s.overlap = 'skip' AND EXISTS (
               SELECT 1 FROM jobs j
               WHERE j.id = s.last_job_id AND j.status IN ('PENDING', 'IN_PROGRESS')) AS busy
    FROM schedules s
    WHERE s.name = $1
), moved AS (
    UPDATE schedules s
    SET next_fire_at = $3,
        last_tick = CASE WHEN p.busy OR cardinality($5::timestamptz[]) = 0 THEN s.last_tick
                         ELSE ($5::timestamptz[])[cardinality($5::timestamptz[])] END,
        last_fired_at = CASE WHEN p.busy OR cardinality($5::timestamptz[]) = 0 THEN s.last_fired_at ELSE $14 END,
        last_job_id = CASE WHEN p.busy OR cardinality($4::uuid[]) = 0 THEN s.last_job_id
                           ELSE ($4::uuid[])[cardinality($4::uuid[])] END,
        fired = s.fired + CASE WHEN p.busy THEN 0 ELSE cardinality($5::timestamptz[]) END,
        skipped = s.skipped + $15 + CASE WHEN p.busy THEN cardinality($5::timestamptz[]) ELSE 0 END,
        last_error = NULL
    FROM previous p
    WHERE s.name = $1 AND s.next_fire_at = $2 AND NOT s.paused
    RETURNING p.busy
), inserted AS (
    INSERT INTO jobs (id, job_type, queue, payload, status, max_attempts, priority, run_at, timeout_ms,
                      idempotency_key, idempotency_request, created_at, updated_at, schedule_name, schedule_tick)
    SELECT t.id, $7, $8, $9, 'PENDING', $11, $10, t.tick, $12, t.key, $13, $14, $14, $1, t.tick
    FROM unnest($4::uuid[], $5::timestamptz[], $6::text[]) AS t(id, tick, key)
    WHERE EXISTS (SELECT 1 FROM moved WHERE NOT moved.busy)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, priority, run_at, created_at, queue, job_type
), listed AS (
    INSERT INTO job_listing (id, created_at, queue, job_type)
    SELECT id, created_at, queue, job_type FROM inserted
)
SELECT m.busy AS overlapped, i.id, i.queue, i.priority, i.run_at
FROM moved m LEFT JOIN inserted i ON true
