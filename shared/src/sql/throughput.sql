-- throughput: the outcomes of each of the last $1 minutes (the current one so far included) for
-- each queue of $2 and each queue with outcomes; a minute without any is all zeros.
-- $1 minutes, $2 queues
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $1::int - 1),
                           date_trunc('minute', now()), interval '1 minute') AS minute
), recent AS (
    SELECT queue, minute, sum(completed)::int8 AS completed, sum(retried)::int8 AS retried,
           sum(dead)::int8 AS dead, sum(cancelled)::int8 AS cancelled
    FROM queue_throughput
    WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1::int - 1)
    GROUP BY queue, minute
), queues AS (
    SELECT queue FROM unnest($2::text[]) AS q(queue)
    UNION
    SELECT queue FROM recent
)
SELECT q.queue, m.minute, coalesce(r.completed, 0) AS completed, coalesce(r.retried, 0) AS retried,
       coalesce(r.dead, 0) AS dead, coalesce(r.cancelled, 0) AS cancelled
FROM queues q
CROSS JOIN minutes m
LEFT JOIN recent r ON r.queue = q.queue AND r.minute = m.minute
ORDER BY q.queue, m.minute
