-- schedule_failed: records why firing a schedule failed. $1 name, $2 error
UPDATE schedules SET last_error = $2 WHERE name = $1
