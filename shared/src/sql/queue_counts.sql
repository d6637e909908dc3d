-- queue_counts (a template, filled by `health::counts_statement`): exact counts per queue of the
-- statuses counted exactly, one part per status, each with its status as a literal, so that
-- Postgres counts it through that status's partial index; with the pending jobs due now and the
-- age of the longest-due one. Then, when the listing is counted too, every job per queue (status
-- 'LISTED'), of which the completed ones are what the other statuses leave. One statement: one
-- snapshot, so that the difference is exact.
{counted}
SELECT queue, 'LISTED' AS status, count(*) AS count, 0::int8 AS ready, NULL::float8 AS oldest_pending_age
FROM job_listing
WHERE {listed}
GROUP BY queue
