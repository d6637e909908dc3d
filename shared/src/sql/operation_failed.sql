-- operation_failed: records why a batch of a running operation failed; the next success clears it.
-- $1 id, $2 error text
UPDATE operations SET last_error = $2, updated_at = now() WHERE id = $1 AND state = 'RUNNING'
