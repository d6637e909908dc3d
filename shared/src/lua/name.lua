-- name: names queues in the SET of queue names, and wakes the workers of every queue for each
-- name new to it (they then read the SET again; see queue.rs).
-- KEYS[1]  the SET of queue names
-- KEYS[2]  the wake ZSET
-- ARGV[1]  the channel to publish each name new to the SET on ("" for none: see BlockingPop in
--          queue.rs)
-- ARGV[2..] the queue names
-- Returns the number of names new to the SET.
local named = 0
for i = 2, #ARGV do
  local queue = ARGV[i]
  if redis.call('SADD', KEYS[1], queue) == 1 then
    redis.call('ZADD', KEYS[2], 0, queue)
    if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], queue) end
    named = named + 1
  end
end
return named
