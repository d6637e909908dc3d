-- operation_create: a new bulk operation and its audit entry, together.
-- $1 id, $2 action, $3 filter (jsonb), $4 statuses, $5 created_before, $6 total, $7 actor,
-- $8 on whose behalf, $9 now
WITH created AS (
    INSERT INTO operations (id, action, filter, statuses, created_before, total, actor, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $9)
    RETURNING *
), audited AS (
    INSERT INTO audit_log (at, actor, on_behalf_of, action, operation_id, filter, count)
    SELECT $9, $7, $8, 'bulk.' || $2, id, $3, $6 FROM created
)
SELECT * FROM created
