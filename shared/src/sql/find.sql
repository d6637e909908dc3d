-- find: jobs matching every filter given, newest first, after a cursor. A NULL parameter is a
-- filter not given.
-- $1 status, $2 queue, $3 job_type, $4 payload (jsonb the job's payload must contain),
-- $5 error (a LIKE pattern for last_error, matched case-insensitively), $6 created at or after,
-- $7 created before, $8 cursor created_at (NULL for the first page), $9 cursor id, $10 limit
-- Returns the job rows.
-- Run as a new statement each time (Store::find does not cache it), so that Postgres plans it
-- for the values given: the filters that are NULL fold away, and the plan uses the index of
-- the filters that are not (a cached, generic plan would have to serve every combination).
SELECT * FROM jobs
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR job_type = $3)
  AND ($4::jsonb IS NULL OR payload @> $4)
  AND ($5::text IS NULL OR last_error ILIKE $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $10
