-- enqueue: makes job ids runnable, each at most once in Redis however often it is pushed.
-- KEYS[1]  the schedule ZSET (member "<level>:<job id>:<queue>", score = due time in ms)
-- KEYS[2]  the SET of queue names
-- KEYS[3]  the wake ZSET: a queue named for the first time is added, to wake a worker that
--          serves every queue (it then reads the SET again)
-- KEYS[4]  the DLQ index ZSET
-- ARGV[1]  the key prefix ("{<namespace>}"); a ready ZSET is "<prefix>:ready:<queue>:<level>"
--          (member = job id, score = order). All keys share the prefix's hash tag.
-- ARGV[2..] groups of five: job id, queue, level, score, and "r" (ready: score = when it became
--          ready, 0 to go first), "q" (ready, and out of the DLQ index: a requeue) or "s"
--          (scheduled: score = due time)
-- Returns the number of ids that were not in Redis before.
-- A job's queue and level never change, so an id can only be in its own ready ZSET or, as
-- "<level>:<id>:<queue>", in the schedule: each push removes it from the other one.
local prefix = ARGV[1]
local known = {}
local added = 0
for i = 2, #ARGV, 5 do
  local id, queue, level, score, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if not known[queue] then
    known[queue] = true
    if redis.call('SADD', KEYS[2], queue) == 1 then
      redis.call('ZADD', KEYS[3], 0, queue)
    end
  end
  local ready = prefix .. ':ready:' .. queue .. ':' .. level
  local member = level .. ':' .. id .. ':' .. queue
  if kind == 's' then
    local was_ready = redis.call('ZREM', ready, id)
    local new = redis.call('ZADD', KEYS[1], score, member)
    if new == 1 and was_ready == 0 then added = added + 1 end
  else
    if kind == 'q' then redis.call('ZREM', KEYS[4], id) end
    local was_scheduled = redis.call('ZREM', KEYS[1], member)
    -- NX: an id already ready keeps its place in line.
    local new = redis.call('ZADD', ready, 'NX', score, id)
    if new == 1 and was_scheduled == 0 then added = added + 1 end
  end
end
return added
