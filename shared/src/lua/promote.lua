-- promote: moves a queue's schedule members that are due to its ready lists, in due-time order.
-- KEYS[1]      the queue's schedule ZSET (member "<level>:<job id>", score = due time in ms)
-- KEYS[2..12]  the queue's ready ZSETs of levels 0..10
-- ARGV[1]      now, in ms since the epoch
-- ARGV[2]      the most members to move in one call
-- ARGV[3]      the channel to publish the queue's name on when its ready ZSETs were empty and are
--              not any more ("" for none), ARGV[4] the queue's name
-- Returns the number of ids moved. Atomic, so two promoters never move one member twice.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
local ready_before = 0
if #due > 0 then ready_before = redis.call('EXISTS', unpack(KEYS, 2)) end
for i = 1, #due, 2 do
  local member, score = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], member)
  local level, id = string.match(member, '^(%d+):(.+)$')
  local ready = level and KEYS[tonumber(level) + 2]
  -- A malformed member is dropped: the job is still in Postgres, and the repairer pushes it again.
  if ready then
    redis.call('ZADD', ready, 'NX', score, id)
    moved = moved + 1
  end
end
if ARGV[3] ~= '' and ready_before == 0 and moved > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return moved
