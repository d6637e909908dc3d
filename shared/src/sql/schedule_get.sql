-- schedule_get: one schedule. $1 name
SELECT * FROM schedules WHERE name = $1
