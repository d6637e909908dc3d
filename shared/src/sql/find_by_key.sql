-- find_by_key: the job created with an idempotency key.
-- $1 idempotency_key
-- Returns the job row, or none.
SELECT * FROM jobs WHERE idempotency_key = $1
