-- enqueue: makes job ids runnable, each at most once in Redis however often it is pushed.
-- KEYS[1]      the schedule ZSET (member "<level>:<job id>", score = due time in ms)
-- KEYS[2..12]  the ready ZSETs for priority levels 0..10 (member = job id, score = order)
-- ARGV         groups of four: job id, level, score, and "r" (ready: score = when it became
--              ready, 0 to go first) or "s" (scheduled: score = due time)
-- Returns the number of ids that were not in Redis before.
-- A job's level never changes, so an id can only be in its own ready ZSET or, as
-- "<level>:<id>", in the schedule: each push removes it from the other one.
local added = 0
for i = 1, #ARGV, 4 do
  local id, level, score, kind = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local ready = KEYS[2 + level]
  local member = level .. ':' .. id
  if kind == 'r' then
    local was_scheduled = redis.call('ZREM', KEYS[1], member)
    -- NX: an id already ready keeps its place in line.
    local new = redis.call('ZADD', ready, 'NX', score, id)
    if new == 1 and was_scheduled == 0 then added = added + 1 end
  else
    local was_ready = redis.call('ZREM', ready, id)
    local new = redis.call('ZADD', KEYS[1], score, member)
    if new == 1 and was_ready == 0 then added = added + 1 end
  end
end
return added
