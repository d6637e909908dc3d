-- relink_parents: in a batch, a child that named an earlier item as its parent, where that item
-- was an idempotent replay (its job was stored before, under another id): the child's edge is moved
-- to the stored job, which is locked and flagged as a create locks any parent (see V12). The
-- caller then runs release_children for the stored jobs, in case they had completed already.
-- $1 child ids, $2 the ids the batch gave the replayed items, $3 the stored jobs' ids
WITH pairs AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS t(child, given, stored)
), locked AS (
    SELECT p.id FROM jobs p WHERE p.id IN (SELECT stored FROM pairs) ORDER BY p.id FOR NO KEY UPDATE
), flagged AS (
    UPDATE jobs p SET has_dependents = true FROM locked l WHERE p.id = l.id AND NOT p.has_dependents
), unlinked AS (
    DELETE FROM job_dependencies d USING pairs
    WHERE d.child = pairs.child AND d.parent = pairs.given
), linked AS (
    INSERT INTO job_dependencies (parent, child)
    SELECT stored, child FROM pairs
    ON CONFLICT DO NOTHING
)
SELECT count(*) AS relinked FROM pairs
