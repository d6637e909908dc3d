-- heartbeat: extends a lease, if the caller still holds it, and notes that it was renewed.
-- $1 id, $2 lease_token, $3 now, $4 lease length in ms, from now by the database clock
-- Returns one row while the lease is held (saying whether the job's cancellation was requested);
-- none when it was lost.
UPDATE jobs
SET lease_expires_at = now() + interval '1 millisecond' * $4::bigint, renewed_at = now(), updated_at = $3
WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_token = $2
RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested
