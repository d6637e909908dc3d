-- audit_list: the audit log, newest first, after a cursor (an entry's id).
-- $1 cursor id (NULL for the first page), $2 limit
SELECT * FROM audit_log
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2
