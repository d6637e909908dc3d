-- schedule_delete: deletes a schedule; the jobs it fired stay. $1 name
-- Returns the name when there was one.
DELETE FROM schedules WHERE name = $1 RETURNING name
