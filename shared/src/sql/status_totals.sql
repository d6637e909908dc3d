-- status_totals: how many jobs each status holds, all queues, counted up to a bound ($1) through
-- that status's partial index; and how many jobs there are (the listing), up to the same bound.
-- $1 bound + 1
SELECT (SELECT count(*) FROM (SELECT FROM jobs WHERE status = 'PENDING' LIMIT $1) x) AS pending,
       (SELECT count(*) FROM (SELECT FROM jobs WHERE status = 'BLOCKED' LIMIT $1) x) AS blocked,
       (SELECT count(*) FROM (SELECT FROM jobs WHERE status = 'IN_PROGRESS' LIMIT $1) x) AS in_progress,
       (SELECT count(*) FROM (SELECT FROM jobs WHERE status = 'FAILED' LIMIT $1) x) AS failed,
       (SELECT count(*) FROM (SELECT FROM jobs WHERE status = 'CANCELLED' LIMIT $1) x) AS cancelled,
       (SELECT count(*) FROM (SELECT FROM job_listing LIMIT $1) x) AS listed
