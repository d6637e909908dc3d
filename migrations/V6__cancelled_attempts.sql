-- A running job whose cancellation was requested (POST /jobs/{id}/cancel) is stopped by its worker
-- at its next heartbeat; that attempt ends CANCELLED, as the job does.
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check
    CHECK (outcome IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'LEASE_EXPIRED', 'RELEASED', 'CANCELLED'));
