-- Job dependencies: a job created with `dependsOn` is BLOCKED until every parent has COMPLETED.
--
-- A child's create locks its parents' rows and sets `has_dependents` on them. A parent's completion
-- updates the same row, so the two are ordered: a completion that commits first is seen by the
-- create (the child is not blocked by it), and one that commits after sees `has_dependents` and
-- sets `dependents_pending`. After its commit the completer releases the children whose parents
-- have all completed (release_children.sql) and clears the flag; the repairer releases whatever a
-- crash left flagged. Nothing polls blocked jobs.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('PENDING', 'BLOCKED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED'));

ALTER TABLE jobs ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN dependents_pending boolean NOT NULL DEFAULT false;

-- One row per (parent, child). A parent may be deleted (pruned, bulk-deleted) before its child
-- runs, so it is not a foreign key; a missing parent is shown as such and keeps the child blocked.
CREATE TABLE job_dependencies (
    parent uuid NOT NULL,
    child  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
);
CREATE INDEX job_dependencies_child_idx ON job_dependencies (child);

-- The repairer's look for completions whose children were not released (a crash in between).
CREATE INDEX jobs_dependents_pending_idx ON jobs (completed_at) WHERE dependents_pending;

-- Counting blocked jobs per queue (queue health) and listing them.
CREATE INDEX jobs_blocked_idx ON jobs (queue) WHERE status = 'BLOCKED';
