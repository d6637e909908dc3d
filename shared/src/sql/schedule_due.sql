-- schedule_due: unpaused schedules whose next tick is due, soonest first (schedules_due_idx).
-- $1 now, $2 limit
SELECT * FROM schedules WHERE NOT paused AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2
