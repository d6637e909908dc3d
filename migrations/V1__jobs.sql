-- The record of every job. Redis holds only ids and can be rebuilt from this table.
CREATE TABLE jobs (
    id                  uuid        PRIMARY KEY,
    job_type            text        NOT NULL CHECK (length(job_type) BETWEEN 1 AND 200),
    queue               text        NOT NULL CHECK (length(queue) BETWEEN 1 AND 200),
    payload             jsonb       NOT NULL,
    status              text        NOT NULL
                        CHECK (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        integer     NOT NULL CHECK (max_attempts >= 1),
    priority            smallint    NOT NULL CHECK (priority BETWEEN 0 AND 100),
    run_at              timestamptz NOT NULL,
    timeout_ms          integer     NOT NULL CHECK (timeout_ms > 0),
    idempotency_key     text        UNIQUE,
    -- The create request as first received, so that a replay with a different request is a conflict.
    idempotency_request jsonb,
    -- Fencing token: bumped by every claim and never reset, so a stale holder can never match it.
    lease_token         bigint      NOT NULL DEFAULT 0,
    lease_expires_at    timestamptz,
    worker_id           text,
    last_error          text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    started_at          timestamptz,
    completed_at        timestamptz,
    -- Set when the repairer re-pushes a job whose id may be missing from Redis.
    repushed_at         timestamptz,

    CONSTRAINT finished_jobs_have_a_finish_time
        CHECK ((status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (completed_at IS NOT NULL)),
    CONSTRAINT only_running_jobs_hold_a_lease
        CHECK ((status = 'IN_PROGRESS') = (lease_expires_at IS NOT NULL AND worker_id IS NOT NULL)),
    CONSTRAINT attempts_within_budget
        CHECK (attempts <= max_attempts),
    CONSTRAINT idempotency_key_comes_with_its_request
        CHECK ((idempotency_key IS NULL) = (idempotency_request IS NULL))
);

-- Claiming from Postgres (Redis down) and repairing Redis: runnable jobs, best first.
CREATE INDEX jobs_pending_idx ON jobs (priority DESC, run_at, id) WHERE status = 'PENDING';
-- The repairer: overdue pending jobs whose id may be missing from Redis.
CREATE INDEX jobs_pending_run_at_idx ON jobs (run_at) WHERE status = 'PENDING';
-- The reaper: leases that may have expired.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'IN_PROGRESS';
-- The DLQ listing: newest first, with a stable cursor.
CREATE INDEX jobs_dead_idx ON jobs (completed_at DESC, id DESC) WHERE status = 'FAILED';

-- One row per attempt, kept across requeues: enough to review a dead job without logs.
CREATE TABLE job_attempts (
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The claim's fencing token: unique per job, increasing, never reused.
    lease_token bigint      NOT NULL,
    -- The attempt number within the job's budget at the time (restarts at 1 after a requeue).
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    worker_id   text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text        NOT NULL
                CHECK (outcome IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'LEASE_EXPIRED', 'RELEASED')),
    error       text,
    PRIMARY KEY (job_id, lease_token),
    CONSTRAINT finished_attempts_have_an_end
        CHECK ((outcome = 'RUNNING') = (finished_at IS NULL))
);
