-- existing_ids: which of the given job ids exist.
-- $1 ids
SELECT id FROM jobs WHERE id = ANY($1::uuid[])
