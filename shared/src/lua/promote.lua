-- promote: moves schedule members that are due to their ready queues, in due-time order.
-- KEYS[1]  the schedule ZSET (member "<level>:<job id>:<queue>", score = due time in ms)
-- KEYS[2]  the SET of queue names, KEYS[3] the wake ZSET (see enqueue.lua)
-- ARGV[1]  now, in ms since the epoch
-- ARGV[2]  the most members to move in one call
-- ARGV[3]  the key prefix; a ready ZSET is "<prefix>:ready:<queue>:<level>"
-- Returns the number of ids moved. Atomic, so two promoters never move one member twice.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for i = 1, #due, 2 do
  local member, score = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], member)
  local level, id, queue = string.match(member, '^(%d+):([^:]+):(.+)$')
  -- A malformed member is dropped: the job is still in Postgres, and the repairer pushes it again.
  if queue then
    if redis.call('SADD', KEYS[2], queue) == 1 then
      redis.call('ZADD', KEYS[3], 0, queue)
    end
    redis.call('ZADD', ARGV[3] .. ':ready:' .. queue .. ':' .. level, 'NX', score, id)
    moved = moved + 1
  end
end
return moved
