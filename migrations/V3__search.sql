-- Finding jobs (GET /jobs) and cancelling them (POST /jobs/{id}/cancel).
--
-- Every filter of a search has an index, and the btree ones end in (created_at DESC, id DESC): the
-- listing's order and its keyset cursor, so a page is read off the index in order and stops at its
-- limit instead of sorting every match.
--
-- pg_trgm serves the substring search on last_error. It is a trusted extension (Postgres 13 and
-- later, RDS included): the database owner (jobq_owner in docs/sql/roles.sql, who runs the
-- migrations) may create it without superuser rights. jobq_app only calls its operators.
--
-- Each migration runs in one transaction, so these indexes are built with CREATE INDEX (not
-- CONCURRENTLY): on an existing large table, writes to jobs wait while they are built.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Set by POST /jobs/{id}/cancel on a running job: its worker stops it. Kept when the job then
-- finishes, as the record that the cancel came too late.
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;

-- Every job, newest first: no filter, or only createdAfter/createdBefore.
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_queue_created_idx ON jobs (queue, created_at DESC, id DESC);
CREATE INDEX jobs_type_created_idx ON jobs (job_type, created_at DESC, id DESC);
-- payload @> '{"userId": 123}': jsonb_path_ops is smaller and faster than the default opclass,
-- and containment is the only operator the search uses.
CREATE INDEX jobs_payload_idx ON jobs USING gin (payload jsonb_path_ops);
-- last_error ILIKE '%timeout%'. Most jobs have no error: they are left out of the index.
CREATE INDEX jobs_last_error_trgm_idx ON jobs USING gin (last_error gin_trgm_ops)
    WHERE last_error IS NOT NULL;
