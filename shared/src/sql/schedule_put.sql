-- schedule_put: creates a schedule, or replaces the one of that name. Its next tick becomes $8
-- (the first after now under the new expression) when it is new, when its expression or zone
-- changed, or when it was paused (ticks during a pause never fire); otherwise it keeps its next
-- tick, so editing a schedule's job neither skips nor repeats a tick.
-- $1 name, $2 cron, $3 timezone, $4 job body, $5 paused, $6 missed_fires, $7 overlap,
-- $8 first tick after now, $9 now
-- Returns the schedule and `created` (true when it was new).
INSERT INTO schedules AS s (name, cron, timezone, job, paused, missed_fires, overlap, next_fire_at,
                            created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
ON CONFLICT (name) DO UPDATE
SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, job = EXCLUDED.job, paused = EXCLUDED.paused,
    missed_fires = EXCLUDED.missed_fires, overlap = EXCLUDED.overlap,
    next_fire_at = CASE
        WHEN s.cron <> EXCLUDED.cron OR s.timezone <> EXCLUDED.timezone OR s.paused THEN EXCLUDED.next_fire_at
        ELSE s.next_fire_at
    END,
    last_error = NULL, updated_at = EXCLUDED.updated_at
RETURNING s.*, (s.xmax = 0) AS created
