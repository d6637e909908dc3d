-- operations_running: the bulk operations not finished yet, oldest first.
-- $1 limit
SELECT * FROM operations WHERE state = 'RUNNING' ORDER BY created_at, id LIMIT $1
