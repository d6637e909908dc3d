-- queue_names: every queue that has a job, in name order. A skip scan of the listing's queue
-- index: one index probe per queue, however many jobs each holds.
WITH RECURSIVE names AS (
    (SELECT queue FROM job_listing ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT l.queue FROM job_listing l WHERE l.queue > names.queue ORDER BY l.queue LIMIT 1)
    FROM names WHERE names.queue IS NOT NULL
)
SELECT queue FROM names WHERE queue IS NOT NULL
