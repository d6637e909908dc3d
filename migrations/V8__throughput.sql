-- Outcomes per queue and minute, for the queues' health (GET /queues): how many jobs completed,
-- were retried, died or were cancelled in each of the last minutes. Counting them from `jobs`
-- would need an index on the finish time, written by every completion; here each outcome
-- statement adds its count to one row instead.
--
-- Outcome statements run concurrently: each picks one of 16 rows (`shard`) of its queue and
-- minute at random, so that they rarely wait for one another's row lock. A reader sums the shards.
-- Rows older than an hour are deleted by the reaper's pass.
CREATE TABLE queue_throughput (
    queue     text        NOT NULL,
    minute    timestamptz NOT NULL,
    shard     smallint    NOT NULL,
    completed bigint      NOT NULL DEFAULT 0,
    retried   bigint      NOT NULL DEFAULT 0,
    dead      bigint      NOT NULL DEFAULT 0,
    cancelled bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute, shard)
);

-- The queues' health estimates a (queue, status) count from the planner's statistics when the
-- status holds too many jobs to count. Without statistics on the pair, the planner multiplies the
-- queue's share by the status's share, as if they were independent; they are not (one queue is
-- all backlog, another all done). A multivariate MCV list keeps the frequent pairs themselves.
CREATE STATISTICS jobs_queue_status_stats (mcv) ON queue, status FROM jobs;
ALTER STATISTICS jobs_queue_status_stats SET STATISTICS 1000;
