-- requeue: takes a job id off the DLQ list and puts it on its ready list, in one step.
-- KEYS[1]  the DLQ list
-- KEYS[2]  the ready list for the job's priority level
-- ARGV[1]  the job id
-- Returns 1.
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
