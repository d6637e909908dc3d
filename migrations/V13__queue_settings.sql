-- Queue settings, changed at run time through PUT /queues/{name}. A queue without a row has the
-- defaults (not paused).
--
-- A paused queue's jobs are left out by every claim (claim_many, claim_next), in the statement
-- that claims: the pause holds fleet-wide from its commit. Their ids, popped from Redis, are
-- dropped rather than claimed; the repairer does not push them again while the queue is paused;
-- the resume pushes every pending job of the queue back at once.
CREATE TABLE queue_settings (
    queue      text        PRIMARY KEY CHECK (length(queue) BETWEEN 1 AND 200),
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);
