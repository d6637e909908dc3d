-- withdraw: takes a job id out of its queue's ready list and schedule (a cancelled job), in one
-- step.
-- KEYS[1]  the queue's schedule ZSET
-- KEYS[2]  the job's ready ZSET (its queue and priority level)
-- ARGV[1]  the job id
-- ARGV[2]  its member in the schedule ("<level>:<job id>")
-- Returns the number of entries removed (0 or 1: an id is in Redis at most once).
local scheduled = redis.call('ZREM', KEYS[1], ARGV[2])
local ready = redis.call('ZREM', KEYS[2], ARGV[1])
return scheduled + ready
