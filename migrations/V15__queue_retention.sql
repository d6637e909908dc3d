-- Retention per queue: how long a queue's finished jobs are kept, per final status, in
-- milliseconds from when they finished. NULL: the deployment's default (JOBQ_RETAIN_*_MS); 0: for
-- ever. The pruner runs the default over the queues without a setting for that status, and each
-- queue's own over that queue's jobs.
ALTER TABLE queue_settings
    ADD COLUMN retain_completed_ms bigint CHECK (retain_completed_ms >= 0),
    ADD COLUMN retain_cancelled_ms bigint CHECK (retain_cancelled_ms >= 0),
    ADD COLUMN retain_dead_ms bigint CHECK (retain_dead_ms >= 0);
