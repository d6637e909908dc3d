-- withdraw: takes a job id out of the ready queue and the schedule (a cancelled job), in one step.
-- KEYS[1]  the schedule ZSET (member "<level>:<job id>")
-- KEYS[2]  the ready ZSET for the job's priority level
-- ARGV[1]  the job id
-- ARGV[2]  the job's priority level
-- Returns the number of entries removed (0 or 1: an id is in Redis at most once).
local scheduled = redis.call('ZREM', KEYS[1], ARGV[2] .. ':' .. ARGV[1])
local ready = redis.call('ZREM', KEYS[2], ARGV[1])
return scheduled + ready
