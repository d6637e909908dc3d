-- queue_pending_page: one queue's PENDING jobs in id order, to push to Redis when it is resumed.
-- $1 queue, $2 after this id (or NULL for the first page), $3 limit
SELECT id, queue, priority, run_at FROM jobs
WHERE status = 'PENDING' AND queue = $1 AND ($2::uuid IS NULL OR id > $2)
ORDER BY id
LIMIT $3
