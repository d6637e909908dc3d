-- requeue: takes a job id out of the DLQ index and puts it on its ready queue, in one step.
-- KEYS[1]  the DLQ ZSET
-- KEYS[2]  the ready ZSET for the job's priority level
-- ARGV[1]  the job id
-- ARGV[2]  now, in ms (its place in line)
-- Returns 1.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
return 1
