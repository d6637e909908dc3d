-- operation_get: one bulk operation.
-- $1 id
SELECT * FROM operations WHERE id = $1
