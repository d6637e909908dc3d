-- enqueue: makes job ids of one queue runnable, each at most once in Redis however often it is
-- pushed.
-- KEYS[1]      the queue's schedule ZSET (member "<level>:<job id>", score = due time in ms)
-- KEYS[2..12]  the queue's ready ZSETs of levels 0..10 (member = job id, score = order)
--              All keys share the queue's hash tag.
-- ARGV[1]      the channel to publish the queue's name on when its ready ZSETs were empty and are
--              not any more ("" for none: see BlockingPop in queue.rs)
-- ARGV[2]      the queue's name
-- ARGV[3..]    groups of four: job id, level, score, and "r" (ready: score = when it became
--              ready, 0 to go first) or "s" (scheduled: score = due time)
-- Returns {added, empty}: the number of ids that were not in Redis before, and 1 if the queue had
-- no key before this call (the caller then names the queue; see queue.rs).
-- A job's queue and level never change, so an id can only be in its own ready ZSET or, as
-- "<level>:<id>", in its queue's schedule: each push removes it from the other one.
local ready_before = redis.call('EXISTS', unpack(KEYS, 2))
local empty = 0
if ready_before == 0 and redis.call('EXISTS', KEYS[1]) == 0 then empty = 1 end
local added = 0
local readied = 0
for i = 3, #ARGV, 4 do
  local id, level, score, kind = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local ready = KEYS[level + 2]
  local member = level .. ':' .. id
  if kind == 's' then
    local was_ready = redis.call('ZREM', ready, id)
    local new = redis.call('ZADD', KEYS[1], score, member)
    if new == 1 and was_ready == 0 then added = added + 1 end
  else
    local was_scheduled = redis.call('ZREM', KEYS[1], member)
    -- NX: an id already ready keeps its place in line.
    local new = redis.call('ZADD', ready, 'NX', score, id)
    if new == 1 and was_scheduled == 0 then added = added + 1 end
    readied = readied + new
  end
end
if ARGV[1] ~= '' and ready_before == 0 and readied > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return {added, empty}
