-- find: the jobs matching every filter given, after a cursor; Store::find adds the order (newest
-- first) and the limit. A NULL parameter is a filter not given.
-- $1 status, $2 queue, $3 job_type, $4 payload (jsonb the job's payload must contain),
-- $5 error (a LIKE pattern for last_error, matched case-insensitively), $6 created at or after,
-- $7 created before, $8 cursor created_at (NULL for the first page), $9 cursor id, $10 limit
-- `{t}` is the table whose creation time is compared and ordered on: `l` (job_listing, whose
-- indexes hold the creation order overall, per queue and per type) or `j` (jobs, whose status
-- index holds it per status). Both hold the same immutable value.
-- Run as a new statement each time (Store::find does not cache it), so that Postgres plans it
-- for the values given: the filters that are NULL fold away, and the plan uses the index of
-- the filters that are not (a cached, generic plan would have to serve every combination).
SELECT j.* FROM jobs j JOIN job_listing l ON l.id = j.id
WHERE ($1::text IS NULL OR j.status = $1)
  AND ($2::text IS NULL OR l.queue = $2)
  AND ($3::text IS NULL OR l.job_type = $3)
  AND ($4::jsonb IS NULL OR j.payload @> $4)
  AND ($5::text IS NULL OR j.last_error ILIKE $5)
  AND ($6::timestamptz IS NULL OR {t}.created_at >= $6)
  AND ($7::timestamptz IS NULL OR {t}.created_at < $7)
  AND ($8::timestamptz IS NULL OR ({t}.created_at, {t}.id) < ($8, $9::uuid))
