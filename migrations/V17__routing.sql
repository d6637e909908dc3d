-- Routing: a worker that serves only some queues (JOBQ_QUEUES) claims, while Redis is down, only
-- their jobs. jobq_claim_next_limited (V16) gains the list of queues served (NULL: every queue).
-- The five-argument function stays, for workers of the previous release during an upgrade.
CREATE FUNCTION jobq_claim_next_limited(worker text, now_ timestamptz, lease_ms bigint, how_many bigint, start_by timestamptz, served text[])
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    at_ timestamptz;
BEGIN
    IF start_by IS NOT NULL AND now() > start_by THEN
        RETURN;
    END IF;
    SELECT array_agg(s.queue ORDER BY s.queue) INTO locked FROM queue_settings s
    WHERE (s.concurrency IS NOT NULL OR s.rate_limit IS NOT NULL) AND NOT s.paused
      AND (served IS NULL OR s.queue = ANY(served))
      AND EXISTS (SELECT FROM jobs j WHERE j.queue = s.queue AND j.status = 'PENDING' AND j.run_at <= now_);
    IF locked IS NULL THEN
        RETURN;
    END IF;
    at_ := jobq_lock_limited(locked);
    RETURN QUERY SELECT * FROM jobq_take_limited(jobq_pick(locked, NULL, now_, how_many, at_), worker, now_, lease_ms, at_);
END
$$;
