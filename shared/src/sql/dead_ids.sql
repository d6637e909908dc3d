-- dead_ids: every dead job, oldest death first, for rebuilding the DLQ list.
SELECT id FROM jobs WHERE status = 'FAILED' ORDER BY completed_at, id
