-- list_dead: dead (FAILED) jobs, newest first, after a cursor.
-- $1 cursor completed_at (or NULL for the first page), $2 cursor id, $3 limit
SELECT * FROM jobs
WHERE status = 'FAILED'
  AND ($1::timestamptz IS NULL OR (completed_at, id) < ($1, $2))
ORDER BY completed_at DESC, id DESC
LIMIT $3
