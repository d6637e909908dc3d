-- schedule_list: schedules by name. $1 the name to start after (NULL for the first page), $2 limit
SELECT * FROM schedules WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2
