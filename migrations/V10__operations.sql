-- Bulk operations (POST /jobs/bulk) and the audit log (GET /audit).
--
-- An operation acts on every job that matches a filter, a batch at a time. Its row is the whole of
-- its progress: the status it is working through (`phase`, an index into `statuses`) and the last
-- job of the last batch (`cursor_*`, in the listing's order, newest first). Each batch is one
-- statement that acts on its jobs and moves the cursor together, so a processor that dies between
-- batches loses nothing and repeats nothing: the next one reads the row and goes on.
CREATE TABLE operations (
    id                uuid        PRIMARY KEY,
    action            text        NOT NULL CHECK (action IN ('requeue', 'cancel', 'delete')),
    -- The filter as the request gave it (GET /jobs's names), for GET /operations/{id} and for the
    -- processors, which rebuild the search from it.
    filter            jsonb       NOT NULL,
    -- The statuses the action applies to, worked through in this order.
    statuses          text[]      NOT NULL,
    phase             smallint    NOT NULL DEFAULT 0,
    cursor_created_at timestamptz,
    cursor_id         uuid,
    -- Jobs created at or after this instant are left alone: an operation acts on what existed
    -- when it was asked for, not on what keeps arriving.
    created_before    timestamptz NOT NULL,
    -- Matches counted when the operation was created.
    total             bigint      NOT NULL,
    -- Jobs acted on, and jobs that matched but had moved on by the time their batch came
    -- (a requeued job that already ran, a pending job that started).
    processed         bigint      NOT NULL DEFAULT 0,
    skipped           bigint      NOT NULL DEFAULT 0,
    state             text        NOT NULL DEFAULT 'RUNNING' CHECK (state IN ('RUNNING', 'DONE')),
    -- Why the last batch failed, until one succeeds (the processors keep trying).
    last_error        text,
    actor             text        NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz
);

-- The processors' question, every second: is anything running?
CREATE INDEX operations_running_idx ON operations (created_at) WHERE state = 'RUNNING';

-- Who did what: every cancel, requeue and bulk operation asked through the API. Rows are only
-- ever added.
CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    -- The authenticated caller (an IAM ARN, `api-token`, or `anonymous` when the API has no auth)
    -- and, as the caller stated it, on whose behalf (the X-Jobq-Actor header; not verified).
    actor        text        NOT NULL,
    on_behalf_of text,
    -- job.cancel, job.requeue, bulk.requeue, bulk.cancel, bulk.delete
    action       text        NOT NULL,
    job_id       uuid,
    operation_id uuid,
    filter       jsonb,
    -- Jobs the action matched when it was asked for.
    count        bigint      NOT NULL
);
