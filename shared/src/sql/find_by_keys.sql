-- find_by_keys: the jobs created with any of these idempotency keys.
-- $1 idempotency_keys
SELECT * FROM jobs WHERE idempotency_key = ANY($1::text[])
