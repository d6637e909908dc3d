-- pending_page: PENDING jobs in id order, for rebuilding Redis.
-- $1 after this id (or NULL for the first page), $2 limit
SELECT id, priority, run_at FROM jobs
WHERE status = 'PENDING' AND ($1::uuid IS NULL OR id > $1)
ORDER BY id
LIMIT $2
