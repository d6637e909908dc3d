-- pending_page: PENDING jobs in id order, for rebuilding Redis; not those of a paused queue (the
-- resume pushes those).
-- $1 after this id (or NULL for the first page), $2 limit
SELECT id, queue, priority, run_at FROM jobs
WHERE status = 'PENDING' AND ($1::uuid IS NULL OR id > $1)
  AND NOT EXISTS (SELECT FROM queue_settings s WHERE s.queue = jobs.queue AND s.paused)
ORDER BY id
LIMIT $2
