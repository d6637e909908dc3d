-- prune_throughput: forgets the outcomes counted more than an hour ago.
WITH deleted AS (
    DELETE FROM queue_throughput WHERE minute < now() - interval '1 hour' RETURNING 1
)
SELECT count(*) AS deleted FROM deleted
