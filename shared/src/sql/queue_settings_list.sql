-- queue_settings_list: every queue's settings that differ from the defaults, or only $1's.
-- $1 queue, or NULL for all
SELECT * FROM queue_settings WHERE $1::text IS NULL OR queue = $1 ORDER BY queue
