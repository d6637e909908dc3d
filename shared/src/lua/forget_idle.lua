-- forget_idle: takes out of the SET of queue names the queues with no id ready, so that the
-- workers of every queue do not wait on the lists of queues long idle. A queue named again by a
-- push (or a promotion) goes back into the SET and wakes a worker (see enqueue.lua).
-- KEYS[1]  the SET of queue names
-- ARGV[1]  the key prefix; a ready ZSET is "<prefix>:ready:<queue>:<level>"
-- ARGV[2]  the number of priority levels
-- Returns the number of names taken out. Atomic: a push in between is before or after it.
local forgotten = 0
for _, queue in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ready = 0
  for level = 0, tonumber(ARGV[2]) - 1 do
    ready = ready + redis.call('EXISTS', ARGV[1] .. ':ready:' .. queue .. ':' .. level)
    if ready > 0 then break end
  end
  if ready == 0 then
    redis.call('SREM', KEYS[1], queue)
    forgotten = forgotten + 1
  end
end
return forgotten
