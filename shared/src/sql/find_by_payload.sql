-- find_by_payload: find.sql for a search that filters on the payload. Postgres keeps no
-- statistics for `payload @>`, and guesses about 1% of the jobs match; with that guess it may walk
-- the creation-time index in order and test each job's payload, which reads the whole table when
-- few match (it chose so for a filter that 20 of 200,000 jobs matched). Here the matches are found
-- first (`OFFSET 0` keeps the subquery from taking the outer order, so the payload index serves
-- it), then sorted: the cost grows with the matches, never with the table.
-- Parameters as find.sql.
SELECT * FROM (
    SELECT * FROM jobs
    WHERE ($1::text IS NULL OR status = $1)
      AND ($2::text IS NULL OR queue = $2)
      AND ($3::text IS NULL OR job_type = $3)
      AND ($4::jsonb IS NULL OR payload @> $4)
      AND ($5::text IS NULL OR last_error ILIKE $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at < $7)
      AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9::uuid))
    OFFSET 0
) AS matched
ORDER BY created_at DESC, id DESC
LIMIT $10
