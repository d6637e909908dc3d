-- promote: moves schedule members that are due to their ready queues, in due-time order.
-- KEYS[1]      the schedule ZSET (member "<level>:<job id>", score = due time in ms)
-- KEYS[2..12]  the ready ZSETs for priority levels 0..10
-- ARGV[1]      now, in ms since the epoch
-- ARGV[2]      the most members to move in one call
-- Returns the number of ids moved. Atomic, so two promoters never move one member twice.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for i = 1, #due, 2 do
  local member, score = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], member)
  local level, id = string.match(member, '^(%d+):(.+)$')
  local key = level and KEYS[2 + tonumber(level)]
  -- A malformed member is dropped: the job is still in Postgres, and the repairer pushes it again.
  if key then
    redis.call('ZADD', key, 'NX', score, id)
    moved = moved + 1
  end
end
return moved
