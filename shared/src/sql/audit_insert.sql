-- audit_insert: one entry of the audit log.
-- $1 at, $2 actor, $3 on whose behalf, $4 action, $5 job id, $6 operation id, $7 filter, $8 count
INSERT INTO audit_log (at, actor, on_behalf_of, action, job_id, operation_id, filter, count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
