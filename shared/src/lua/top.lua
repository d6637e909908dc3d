-- top: the highest priority level of a queue with an id ready, or -1 when none is.
-- KEYS[1..11]  the queue's ready ZSETs of levels 0..10
for level = #KEYS, 1, -1 do
  if redis.call('EXISTS', KEYS[level]) == 1 then return level - 1 end
end
return -1
